// CPU FlashMask attention: the framework-free entry points the bindings call.
//
// Inputs are described by flashmask::FwdParams / BwdParams (see params.h);
// the caller has validated shapes, dtypes and bound counts. Extra memory is
// linear in the sequence lengths (packed operands, dq partial sums; see
// docs/cpu-kernel.md): no seqlen_q x seqlen_k buffer. Threads: OpenMP's
// (OMP_NUM_THREADS, else every core); results do not depend on the thread
// count. The instruction-set variant is chosen per call (isa.h).
#pragma once

#include "flashmask/params.h"

namespace flashmask {

// Writes params.out and params.lse.
void flashmask_fwd_cpu(const FwdParams& params);

// Writes params.dq, params.dk and params.dv (overwriting them). Always
// deterministic: no two threads ever add into the same gradient element.
void flashmask_bwd_cpu(const BwdParams& params);

}  // namespace flashmask
