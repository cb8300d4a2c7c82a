/* metrics: JSON lines written and parsed back, resume truncation equals an
 * uninterrupted run, progress line text, live-line vs plain-line output. */
#include <cjson/cJSON.h>
#include <math.h>

#include "finetune/train/metrics.h"
#include "test.h"

static const char *RUN = "test_metrics_run";

static char *slurp(const char *path) {
    char *t = NULL;
    ft_error e;
    if (ft_read_file(path, &t, NULL, &e)) return ft_xstrdup("");
    return t;
}

/* the same run for steps [from, to]: train records each step, eval every 3 */
static void log_steps(mx_log *m, int from, int to) {
    ft_error e;
    for (int s = from; s <= to; s++) {
        mx_begin(m, s);
        mx_add(m, "epoch", s / 4.0);
        mx_add(m, "loss", 3.0 / (1.0 + s));
        mx_add(m, "lr", 1e-5 * s / 10.0);
        mx_add(m, "rewards/chosen", -0.125 * s);
        CHECK(mx_write(m, &e) == FT_OK);
        if (s % 3 == 0) {
            mx_begin(m, s);
            mx_add(m, "eval_loss", 2.5);
            mx_add(m, "eval_ppl", exp(2.5));
            CHECK(mx_write(m, &e) == FT_OK);
        }
    }
}

static void test_file(void) {
    ft_error e = {0};
    mx_log *m;
    CHECK(system("rm -rf test_metrics_run") == 0);
    CHECK(mx_open(RUN, -1, &m, &e) == FT_OK);
    if (!m) return;
    log_steps(m, 1, 10);
    mx_begin(m, 11);
    mx_add(m, "loss", NAN);
    mx_add(m, "weird\"key", 1.5);
    mx_add(m, "weird\"key", 2.5);
    CHECK(mx_write(m, &e) == FT_OK);
    mx_close(m);
    char *full = slurp("test_metrics_run/metrics.jsonl");
    /* every line is a JSON object with step first */
    int lines = 0;
    char *save = NULL;
    char *copy = ft_xstrdup(full);
    for (char *l = strtok_r(copy, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        lines++;
        CHECK_MSG(strncmp(l, "{\"step\":", 8) == 0, "%s", l);
        cJSON *o = cJSON_Parse(l);
        CHECK_MSG(o != NULL, "unparsable line: %s", l);
        if (lines == 1 && o) {
            CHECK(cJSON_GetObjectItem(o, "step")->valuedouble == 1);
            CHECK(cJSON_GetObjectItem(o, "epoch")->valuedouble == 0.25);
            CHECK_CLOSE(cJSON_GetObjectItem(o, "loss")->valuedouble, 1.5, 1e-9);
            CHECK_CLOSE(cJSON_GetObjectItem(o, "lr")->valuedouble, 1e-6, 1e-9);
            CHECK(cJSON_GetObjectItem(o, "rewards/chosen")->valuedouble == -0.125);
        }
        if (o && cJSON_GetObjectItem(o, "step")->valuedouble == 11) {
            CHECK(cJSON_IsNull(cJSON_GetObjectItem(o, "loss")));
            CHECK(cJSON_GetObjectItem(o, "weird\"key")->valuedouble == 2.5);
        }
        cJSON_Delete(o);
    }
    free(copy);
    CHECK(lines == 10 + 3 + 1);

    /* interrupted at step 10 after a torn write, resumed from the checkpoint of step 6 */
    CHECK(system("rm -rf test_metrics_run") == 0);
    CHECK(mx_open(RUN, -1, &m, &e) == FT_OK);
    log_steps(m, 1, 10);
    mx_close(m);
    FILE *f = fopen("test_metrics_run/metrics.jsonl", "a");
    fputs("{\"step\":11,\"lo", f); /* SIGKILL mid-line */
    fclose(f);
    CHECK(mx_open(RUN, 6, &m, &e) == FT_OK);
    char *cut = slurp("test_metrics_run/metrics.jsonl");
    CHECK(strstr(cut, "\"step\":7") == NULL);
    CHECK(strstr(cut, "\"step\":6,\"eval_loss\"") != NULL);
    log_steps(m, 7, 10);
    mx_begin(m, 11);
    mx_add(m, "loss", NAN);
    mx_add(m, "weird\"key", 2.5);
    CHECK(mx_write(m, &e) == FT_OK);
    mx_close(m);
    char *resumed = slurp("test_metrics_run/metrics.jsonl");
    CHECK_MSG(strcmp(resumed, full) == 0, "resumed:\n%s\nuninterrupted:\n%s", resumed, full);
    free(cut);
    free(resumed);
    free(full);
    /* an old metrics.jsonl is replaced (temp file + rename), never truncated in place: a hard link to it
     * keeps the old records, for a resume's rewrite and for a fresh run's empty start alike */
    CHECK(system("rm -rf test_metrics_run") == 0);
    CHECK(mx_open(RUN, -1, &m, &e) == FT_OK);
    log_steps(m, 1, 10);
    mx_close(m);
    char *old = slurp("test_metrics_run/metrics.jsonl");
    CHECK(link("test_metrics_run/metrics.jsonl", "test_metrics_run/kept") == 0);
    CHECK(mx_open(RUN, 6, &m, &e) == FT_OK);
    mx_close(m);
    char *kept = slurp("test_metrics_run/kept");
    CHECK(strcmp(kept, old) == 0);
    free(kept);
    CHECK(mx_open(RUN, -1, &m, &e) == FT_OK);
    mx_close(m);
    kept = slurp("test_metrics_run/metrics.jsonl");
    CHECK(kept[0] == 0);
    free(kept);
    kept = slurp("test_metrics_run/kept");
    CHECK(strcmp(kept, old) == 0);
    free(kept);
    free(old);
    /* resume with no file yet is fine */
    CHECK(system("rm -rf test_metrics_run") == 0);
    CHECK(mx_open(RUN, 5, &m, &e) == FT_OK);
    mx_close(m);
    CHECK(system("rm -rf test_metrics_run") == 0);
}

static void test_format(void) {
    char b[256], d[32];
    mx_progress_info p = {12, 100, 2.34561, 1e-5, 1.234, 1234.4, 1.23, NULL, 0};
    mx_format_progress(b, sizeof b, &p, 83);
    CHECK_MSG(strcmp(b, "step 12/100 | loss 2.3456 | lr 1.00e-05 | gnorm 1.23 | 1234 tok/s | ETA 1m23s | mem 1.2 GiB") == 0,
              "%s", b);
    mx_field ex[2] = {{"acc", 0.75, "%.2f"}, {"margin", 0.123456, NULL}};
    mx_progress_info q = {3, 0, 0.5, NAN, NAN, NAN, NAN, ex, 2};
    mx_format_progress(b, sizeof b, &q, -1);
    CHECK_MSG(strcmp(b, "step 3 | loss 0.5000 | acc 0.75 | margin 0.1235") == 0, "%s", b);
    p.total_steps = 50;
    mx_format_progress(b, sizeof b, &p, -1);
    CHECK_MSG(strstr(b, "ETA --") != NULL, "%s", b);
    CHECK(strcmp(mx_format_duration(d, sizeof d, 45), "45s") == 0);
    CHECK(strcmp(mx_format_duration(d, sizeof d, 83), "1m23s") == 0);
    CHECK(strcmp(mx_format_duration(d, sizeof d, 7500), "2h05m") == 0);
    CHECK(strcmp(mx_format_duration(d, sizeof d, 3 * 86400 + 4 * 3600 + 5), "3d04h") == 0);
    /* tiny buffers never overflow */
    char small[10];
    mx_format_progress(small, sizeof small, &p, 10);
    CHECK(strlen(small) == 9);
}

static void test_term(void) {
    mx_progress_info p = {0, 10, 1.0, 1e-4, NAN, NAN, NAN, NULL, 0};
    /* terminal: one line rewritten with \r and clear-to-EOL; mx_print clears it first */
    FILE *f = tmpfile();
    mx_term t;
    mx_term_init(&t, f, 1, 1);
    for (int s = 1; s <= 3; s++) {
        p.step = s;
        mx_progress(&t, &p);
    }
    mx_print(&t, "eval step %d | loss %.4f", 3, 0.5);
    p.step = 4;
    mx_progress(&t, &p);
    mx_term_finish(&t);
    long n = ftell(f);
    rewind(f);
    char buf[2048] = {0};
    CHECK(fread(buf, 1, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1, f) > 0);
    fclose(f);
    const char *want = "\rstep 1/10 | loss 1.0000 | lr 1.00e-04 | ETA --\033[K\rstep 2/10";
    CHECK_MSG(strncmp(buf, want, strlen(want)) == 0, "%s", buf);
    CHECK(strstr(buf, "\r\033[Keval step 3 | loss 0.5000\n\rstep 4/10") != NULL);
    int newlines = 0;
    for (char *c = buf; *c; c++) newlines += *c == '\n';
    CHECK(newlines == 2);
    CHECK(buf[strlen(buf) - 1] == '\n');

    /* not a terminal: plain lines every 5 steps, plus the first and the last */
    f = tmpfile();
    mx_term_init(&t, f, 0, 5);
    for (int s = 1; s <= 10; s++) {
        p.step = s;
        mx_progress(&t, &p);
    }
    mx_term_finish(&t);
    n = ftell(f);
    rewind(f);
    memset(buf, 0, sizeof buf);
    CHECK(fread(buf, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    CHECK(strchr(buf, '\r') == NULL && strchr(buf, '\033') == NULL);
    CHECK(strncmp(buf, "step 1/10", 9) == 0);
    CHECK(strstr(buf, "\nstep 5/10") != NULL && strstr(buf, "\nstep 10/10") != NULL);
    CHECK(strstr(buf, "step 2/10") == NULL);
    CHECK_MSG(strstr(buf, "step 10/10 | loss 1.0000 | lr 1.00e-04 | ETA 0s\n") != NULL, "%s", buf);
}

int main(void) {
    test_file();
    test_format();
    test_term();
    TEST_DONE();
}
