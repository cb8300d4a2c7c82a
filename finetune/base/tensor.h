/* tensor: a typed, shaped view of memory that lives on one device.
 *
 * A tensor never owns its memory; the backend (or an arena drawn from it)
 * does. Shapes are row-major, up to 4 dims. Model code reads and writes
 * values only through backend ops or explicit host copies, which is what lets
 * the same model code drive the CPU and CUDA backends. */
#ifndef FT_TENSOR_H
#define FT_TENSOR_H

#include <stddef.h>
#include <stdint.h>

typedef enum ft_dtype {
    FT_F32 = 0,
    FT_F16,
    FT_BF16,
    FT_F64,
    FT_I64,
    FT_I32,
    FT_I16,
    FT_I8,
    FT_U8,
    FT_BOOL,
    FT_DTYPE_COUNT
} ft_dtype;

typedef enum ft_device { FT_DEV_CPU = 0, FT_DEV_CUDA = 1 } ft_device;

typedef struct ft_tensor {
    ft_dtype dtype;
    ft_device device;
    int ndim;
    int64_t shape[4];
    void *data;
} ft_tensor;

size_t ft_dtype_size(ft_dtype t);
const char *ft_dtype_name(ft_dtype t); /* safetensors spelling: "F32", "BF16", ... */
int ft_dtype_from_name(const char *name, ft_dtype *out); /* 0 on success */

int64_t ft_numel(const ft_tensor *t);
size_t ft_nbytes(const ft_tensor *t);

/* Build a tensor header (no allocation). */
ft_tensor ft_tensor_make(void *data, ft_dtype dt, ft_device dev, int ndim, const int64_t *shape);
ft_tensor ft_t1(void *data, ft_dtype dt, ft_device dev, int64_t d0);
ft_tensor ft_t2(void *data, ft_dtype dt, ft_device dev, int64_t d0, int64_t d1);
ft_tensor ft_t3(void *data, ft_dtype dt, ft_device dev, int64_t d0, int64_t d1, int64_t d2);

/* Format "[2, 3, 4]" into buf. */
const char *ft_shape_str(const ft_tensor *t, char *buf, size_t n);

#endif
