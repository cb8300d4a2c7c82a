/* cuemu stand-in for <cuda_fp16.h>: see tests/cuemu/cuemu.h */
#include "../cuemu.h"
