"""GPU tests of the Paddle op itself: built by setup.py, registered with Paddle, run
through Paddle's autograd on a GPU.

They skip cleanly without a CUDA build of Paddle, without a GPU, or when the installed
op was built without its CUDA kernels; FLASHMASK_REQUIRE_PADDLE_GPU=1 turns a skip into
a failure (tools/paddle_gpu_check.sh sets it). They use no Paddle GPU kernel of
Paddle's own (inputs made from NumPy and copied, results copied back, casts done on
the CPU), so they also run where Paddle's own kernels were not built for the GPU, such
as paddlepaddle-gpu 2.6.2 on Hopper.
"""

from tests.gpu_suites import skip_unless_ready


def _skip_reason():
    try:
        import paddle
    except ImportError:
        return "Paddle is not installed"
    if not paddle.is_compiled_with_cuda():
        return "Paddle is a CPU build"
    if paddle.device.cuda.device_count() == 0:
        return "no CUDA device"
    from paddle_flashmask import _ops

    if not _ops.has_cuda_kernels():
        return "the paddle_flashmask op was built without its CUDA kernels"
    return None


def pytest_collection_modifyitems(config, items):
    skip_unless_ready(items, __file__, _skip_reason, "FLASHMASK_REQUIRE_PADDLE_GPU")
