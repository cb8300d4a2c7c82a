/* cuemu stand-in for <cuda_bf16.h>: see tests/cuemu/cuemu.h */
#include "../cuemu.h"
