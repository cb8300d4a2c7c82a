/* Built only when nvcc is absent: the CUDA backend reports that it is missing. */
#include "finetune/backend/backend.h"

int ft_backend_cuda_available(void) { return 0; }

int ft_backend_cuda_create(ft_backend **out, ft_error *e) {
    *out = NULL;
    return ft_fail(e, FT_EDEVICE, "device=cuda: this finetune was built without CUDA (nvcc was not found)");
}
