// CPU FlashMask attention: the framework-free entry points the bindings call.
//
// Inputs are described by flashmask::FwdParams / BwdParams (see params.h);
// the caller has validated shapes, dtypes and bound counts. Extra memory is a
// bounds summary per 64 keys and mask head plus a few fp32 tiles per thread:
// no seqlen_q x seqlen_k buffer. Threads: OpenMP's (OMP_NUM_THREADS, else
// every core); results do not depend on the thread count.
#pragma once

#include "flashmask/params.h"

namespace flashmask {

// Writes params.out and params.lse.
void flashmask_fwd_cpu(const FwdParams& params);

// Writes params.dq, params.dk and params.dv (overwriting them). Always
// deterministic: no two threads ever add into the same gradient element.
void flashmask_bwd_cpu(const BwdParams& params);

}  // namespace flashmask
