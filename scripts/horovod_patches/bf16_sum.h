// hvdtrain: a bfloat16 sum for Horovod's MPI allreduce.
//
// Horovod 0.28.1 has no bfloat16 type: hvdtrain's --compression bf16 then needs two
// collectives per bucket at 3+ ranks (an alltoall, a local sum, an allgather). With this
// file, an MPI datatype and a commutative MPI_Op for bfloat16, Horovod's allreduce sums
// bfloat16 itself: one collective per bucket, fused like float32's. scripts/build_horovod.py
// copies it next to mpi_context.cc and includes it there; nothing of Horovod is vendored.
//
// Each partial sum is done in float32 and rounded back to bfloat16 to nearest, ties to even,
// exactly as torch rounds (c10::BFloat16), so a two-operand sum here equals torch's
// (a.float() + b.float()).bfloat16(); a NaN stays a NaN (torch's 0x7FC0).
#ifndef HVDTRAIN_BF16_SUM_H
#define HVDTRAIN_BF16_SUM_H

#include <cstdint>
#include <cstring>

#define OMPI_SKIP_MPICXX
#include "mpi.h"

namespace hvdtrain_bf16 {

inline float ToFloat(uint16_t bits) {
  uint32_t widened = uint32_t(bits) << 16;
  float value;
  std::memcpy(&value, &widened, sizeof value);
  return value;
}

inline uint16_t FromFloat(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) {
    return 0x7fc0;
  }
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return uint16_t(bits >> 16);
}

inline void Sum(void* invec, void* inoutvec, int* len, MPI_Datatype* /*datatype*/) {
  const auto* in = static_cast<const uint16_t*>(invec);
  auto* inout = static_cast<uint16_t*>(inoutvec);
  for (int i = 0; i < *len; ++i) {
    inout[i] = FromFloat(ToFloat(in[i]) + ToFloat(inout[i]));
  }
}

// The datatype (two bytes, as Horovod's float16) and its sum, freed with the context's
// others in MPIContext::FinalizeWithoutEnv.
inline void CreateTypeAndSum(MPI_Datatype& type, MPI_Op& sum) {
  MPI_Type_contiguous(2, MPI_BYTE, &type);
  MPI_Type_commit(&type);
  MPI_Op_create(&Sum, 1, &sum);
}

}  // namespace hvdtrain_bf16

#endif  // HVDTRAIN_BF16_SUM_H
