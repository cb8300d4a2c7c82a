/* dirlock: one run at a time per output directory.
 *
 * ft_dirlock_acquire(dir) creates dir (mkdir -p) and the advisory lock file dir/.finetune.lock holding
 * "PID HOST\n" of this process, and holds flock(LOCK_EX) on it for as long as the lock is held. The file
 * is written under a temporary name, locked, and only then link()ed into place, so the lock file never
 * exists half-written or unlocked. When the lock file is there already:
 *   - flock on it fails (another process holds it), or it names a live process on this host, or a
 *     process on another host: FT_EINPUT, naming the lock file and the PID and host holding it;
 *   - it names a process that is not running on this host and nobody holds its flock: it is stale (a
 *     run that was killed); a note goes to stderr and the lock is taken over.
 * ft_dirlock_release removes the lock file (only if it is still ours) and, when acquire created dir and
 * nothing else was written there, the directory too. NULL is a no-op. */
#ifndef FT_DIRLOCK_H
#define FT_DIRLOCK_H

#include "finetune/base/util.h"

#define FT_DIRLOCK_NAME ".finetune.lock"

typedef struct ft_dirlock ft_dirlock;

int ft_dirlock_acquire(const char *dir, ft_dirlock **out, ft_error *e);
void ft_dirlock_release(ft_dirlock *l);

#endif
