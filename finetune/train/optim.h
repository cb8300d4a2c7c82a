/* optim: AdamW over the trainable parameters, the learning-rate schedule and global-norm clipping.
 *
 * Follows PyTorch and transformers: torch.optim.AdamW (decoupled weight decay, bias correction),
 * torch.nn.utils.clip_grad_norm_ (coefficient max_norm / (norm + 1e-6), capped at 1), and
 * transformers' schedulers, where optimizer step s (0-based) uses lr * lambda(s): linear warmup from 0,
 * then constant, linear decay or cosine decay towards min_lr_ratio * lr. Weight decay applies to
 * matrices only: never to norm weights or biases (1-D tensors). Moments exist only for trainable
 * parameters (those whose gradient tensor has data). */
#ifndef FT_OPTIM_H
#define FT_OPTIM_H

#include "finetune/model/model.h"

typedef enum { FT_SCHED_CONSTANT = 0, FT_SCHED_LINEAR, FT_SCHED_COSINE } ft_schedule;

typedef struct ft_optim_cfg {
    float lr, beta1, beta2, eps, weight_decay;
    float grad_clip; /* max global norm; 0 = no clipping */
    ft_schedule schedule;
    int warmup_steps, total_steps;
    float min_lr_ratio; /* floor of the decay, as a fraction of lr */
} ft_optim_cfg;

typedef struct ft_optim {
    ft_optim_cfg cfg;
    ft_backend *b;
    int n;           /* trainable parameters */
    int cap;         /* allocated entries of the arrays below */
    ft_param *w, *g; /* [n] weight and gradient, same names */
    ft_tensor *m, *v;
    uint8_t *decay;
    int step; /* optimizer steps taken */
} ft_optim;

ft_optim_cfg optim_defaults(void);
int optim_parse_schedule(const char *name, ft_schedule *out); /* "constant", "linear", "cosine" */
/* Pairs each weight of m with its gradient in g; only parameters with gradient memory are optimized. */
int optim_create(ft_model *m, ft_weights *g, const ft_optim_cfg *cfg, ft_optim **out, ft_error *e);
/* Same, but an optimizer with no model parameter is fine (adapters are added with optim_add_param). */
int optim_create_ex(ft_model *m, ft_weights *g, const ft_optim_cfg *cfg, int allow_empty, ft_optim **out, ft_error *e);
/* Optimize one more fp32 parameter w with gradient g (e.g. a LoRA matrix); name is its checkpoint key.
 * Weight decay applies when it is a matrix. Moments start at zero. */
int optim_add_param(ft_optim *o, const char *name, ft_tensor *w, ft_tensor *g, ft_error *e);
void optim_free(ft_optim *o);

float optim_lr_at(const ft_optim_cfg *cfg, int step);
/* Global L2 norm of the gradients times grad_scale. */
double optim_grad_norm(ft_optim *o, float grad_scale);

typedef struct ft_step_info {
    double grad_norm; /* before clipping (after grad_scale) */
    float lr;
    int skipped; /* non-finite gradients: nothing was updated */
} ft_step_info;
/* One step: gradients are multiplied by grad_scale (e.g. 1/loss_scale), clipped, and applied. A parameter
 * without moments (m[i].data NULL: another rank's ZeRO-1 shard) is not updated; the norm is over all gradients. */
void optim_step(ft_optim *o, float grad_scale, ft_step_info *info);

#endif
