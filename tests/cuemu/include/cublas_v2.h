/* cuemu stand-in for <cublas_v2.h>: see tests/cuemu/cuemu.h */
#include "../cuemu.h"
