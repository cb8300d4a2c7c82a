/* cuemu stand-in for <cuda_runtime.h>: see tests/cuemu/cuemu.h */
#include "../cuemu.h"
