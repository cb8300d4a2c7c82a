/* cuemu stand-in for <cublasLt.h>: see tests/cuemu/cuemu.h */
#include "../cuemu.h"
