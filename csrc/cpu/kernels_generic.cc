// The portable variant: ReferenceOps, whatever the compiler makes of it for
// the build's target. Also the reference the faster variants are tested against.
#include "kernel_deps.h"
// (no pragma: the build's own ISA)
#include "backward_impl.h"
#include "forward_impl.h"

namespace flashmask {
namespace cpu {
namespace {
using GenericOps = ReferenceOps;
}  // namespace

void run_generic(const FwdParams& params) {
  dispatch_dtype(params.dtype, [&](auto tag) { forward<decltype(tag), GenericOps>(params); });
}

void run_generic(const BwdParams& params) {
  dispatch_dtype(params.dtype,
                 [&](auto tag) { Backward<decltype(tag), GenericOps>(params).run(); });
}

}  // namespace cpu
}  // namespace flashmask
