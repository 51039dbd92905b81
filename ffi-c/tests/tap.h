/*
 * Minimal TAP-like reporting for the deploykit C tests: every check prints
 * "ok - NAME" or "not ok - NAME" (with "# " diagnostics); tap_done() prints a
 * summary comment and returns the exit status (non-zero on any failure).
 */
#ifndef DK_TEST_TAP_H
#define DK_TEST_TAP_H

#include <deploykit.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int tap_passed;
static int tap_failed;

/* Records one check; returns `ok` so callers can skip dependent checks. */
static int tap_check(int ok, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int tap_check(int ok, const char *file, int line, const char *fmt, ...) {
    va_list ap;
    printf("%s - ", ok ? "ok" : "not ok");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    if (ok) {
        tap_passed++;
    } else {
        tap_failed++;
        printf("#   at %s:%d\n", file, line);
    }
    fflush(stdout);
    return ok;
}

#define CHECK(cond, ...) tap_check((cond) ? 1 : 0, __FILE__, __LINE__, __VA_ARGS__)

/* Prints a diagnostic line. */
static inline void tap_diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void tap_diag(const char *fmt, ...) {
    va_list ap;
    printf("# ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
}

/* The error slot the checked calls write: pass `&E` as their `err` argument. */
static dk_error *E;

/*
 * Checks that a call returned `want`, that `E` is set exactly on failure with
 * the same code and a non-empty message (which must contain `needle` when not
 * NULL); frees it. Returns whether the check passed.
 */
static int expect_rc(const char *file, int line, dk_result rc, dk_result want, const char *needle, const char *name) {
    dk_error *err = E;
    int ok = rc == want;
    E = NULL;
    const char *msg = err ? dk_error_message(err) : NULL;
    if (want == DK_OK) {
        ok = ok && err == NULL;
    } else {
        ok = ok && err != NULL && dk_error_code(err) == want && msg != NULL && msg[0] != '\0';
        if (ok && needle != NULL) {
            ok = strstr(msg, needle) != NULL;
        }
    }
    tap_check(ok, file, line, "%s", name);
    if (!ok) {
        tap_diag("  got %u (%s), want %u (%s); message: %s", (unsigned)rc, dk_result_describe(rc), (unsigned)want,
                 dk_result_describe(want), msg ? msg : "(no error object)");
        if (needle) {
            tap_diag("  wanted the message to contain: %s", needle);
        }
    }
    dk_error_free(err);
    return ok;
}

/* EXPECT_RC(call passing &E, want, needle or NULL, name): clears E, makes the call, checks it. */
#define EXPECT_RC(call, want, needle, name) \
    (E = NULL, expect_rc(__FILE__, __LINE__, (call), (want), (needle), (name)))

/* The broker URL: argv[1], else $DK_TEST_URL. Exits 2 without one. */
static const char *test_url(int argc, char **argv) {
    const char *url = argc > 1 ? argv[1] : getenv("DK_TEST_URL");
    if (url == NULL || url[0] == '\0') {
        fprintf(stderr, "usage: %s STOMP_URL (or set DK_TEST_URL)\n", argv[0]);
        exit(2);
    }
    return url;
}

/* Seconds on the monotonic clock. */
static inline double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Connect options every test uses: bounded attempts and timeouts (valgrind is slow). */
static dk_connect_options test_options(void) {
    dk_connect_options o;
    memset(&o, 0, sizeof o);
    o.connect_attempts = 3;
    o.connect_timeout_ms = 20000;
    o.receipt_timeout_ms = 20000;
    return o;
}

/* Exit status: 0 when every check passed. */
static int tap_done(const char *program) {
    printf("# %s: %d passed, %d failed\n", program, tap_passed, tap_failed);
    fflush(stdout);
    return tap_failed == 0 ? 0 : 1;
}

#endif /* DK_TEST_TAP_H */
