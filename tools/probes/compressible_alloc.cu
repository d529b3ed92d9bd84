// Experiment helper (not part of the library): device memory from cuMemCreate, compressible or
// not, mapped at a reserved range; and a driver-API memset.
#include <cuda.h>
#include <cstdio>
extern "C" {
int comp_supported(int dev) {
  int v = -1;
  cuDeviceGetAttribute(&v, CU_DEVICE_ATTRIBUTE_GENERIC_COMPRESSION_SUPPORTED, dev);
  return v;
}
// Returns 0 on success; *granted = the compression type the allocation got.
int comp_alloc(size_t bytes, int compress, int dev, unsigned long long* out, size_t* mapped, int* granted) {
  CUmemAllocationProp prop = {};
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  prop.location.id = dev;
  prop.allocFlags.compressionType = compress ? CU_MEM_ALLOCATION_COMP_GENERIC : CU_MEM_ALLOCATION_COMP_NONE;
  size_t gran = 0;
  if (CUresult r = cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_RECOMMENDED)) return 100 + r;
  size_t size = (bytes + gran - 1) / gran * gran;
  CUmemGenericAllocationHandle h;
  if (CUresult r = cuMemCreate(&h, size, &prop, 0)) return 1000 + r;
  CUmemAllocationProp got = {};
  cuMemGetAllocationPropertiesFromHandle(&got, h);
  *granted = got.allocFlags.compressionType;
  CUdeviceptr p;
  if (CUresult r = cuMemAddressReserve(&p, size, 0, 0, 0)) return 2000 + r;
  if (CUresult r = cuMemMap(p, size, 0, h, 0)) return 3000 + r;
  CUmemAccessDesc acc = {};
  acc.location = prop.location;
  acc.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  if (CUresult r = cuMemSetAccess(p, size, &acc, 1)) return 4000 + r;
  *out = p;
  *mapped = size;
  return 0;
}
int memset_d32(unsigned long long p, size_t n_words, void* stream) {
  return cuMemsetD32Async(p, 0, n_words, (CUstream)stream);
}
}
