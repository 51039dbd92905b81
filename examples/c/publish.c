/*
 * publish: connect, publish a commit (and its event line), a build and an
 * event, then disconnect (which waits until the broker has everything).
 *
 *   ./publish [URL]          URL default: $DK_BROKER_URL, else stomp://127.0.0.1:61613
 */
#include <deploykit.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Prints a failed call's error and frees it; returns whether the call succeeded. */
static int ok(dk_result rc, dk_error *err, const char *what) {
    if (rc == DK_OK) {
        return 1;
    }
    fprintf(stderr, "publish: %s failed: %s (code %u)\n", what, err ? dk_error_message(err) : dk_result_describe(rc),
            (unsigned)rc);
    dk_error_free(err);
    return 0;
}

int main(int argc, char **argv) {
    const char *url = argc > 1 ? argv[1] : getenv("DK_BROKER_URL");
    if (url == NULL) {
        url = "stomp://127.0.0.1:61613";
    }

    /* Zero means "default"; bound the attempts so a broker that is down fails fast. */
    dk_connect_options opts;
    memset(&opts, 0, sizeof opts);
    opts.connect_attempts = 3;
    opts.connect_timeout_ms = 5000;

    dk_client *client = NULL;
    dk_error *err = NULL;
    if (!ok(dk_client_connect(url, &opts, &client, &err), err, "connect")) {
        return 1;
    }

    /* A push of refs/heads/main with one commit, as a git post-receive hook would send it. */
    dk_commit_info info = {
        .id = "2222222222222222222222222222222222222222",
        .author = "Ada Lovelace <ada@example.org>",
        .timestamp = "2024-05-01T12:00:00Z",
        .message = "Fix the deploy script",
    };
    dk_commit commit = {
        .repo = "site",
        .oldrev = "1111111111111111111111111111111111111111",
        .newrev = "2222222222222222222222222222222222222222",
        .refname = "refs/heads/main",
        .source = DK_SOURCE_GIT,
        .commits = &info,
        .n_commits = 1,
    };
    dk_publish_options popts = {.source = "c-example"}; /* JSON wire, default destinations */
    int good = ok(dk_publish_commit(client, &commit, &popts, &err), err, "publish commit");

    dk_build build = {
        .job = "site",
        .number = 42,
        .status = DK_BUILD_SUCCESS,
        .branch = "origin/main",
        .commit = "2222222222222222222222222222222222222222",
        .duration_ms = 61000,
        .correlation_id = "2222222222222222222222222222222222222222",
    };
    err = NULL;
    good = good && ok(dk_publish_build(client, &build, &popts, &err), err, "publish build");

    err = NULL;
    good = good && ok(dk_publish_event(client, NULL, "hello from the C example", NULL, &popts, &err), err, "publish event");

    /* A raw message with headers and a receipt. */
    const char body[] = "raw bytes";
    dk_header headers[] = {{"x-example", "publish.c"}};
    err = NULL;
    good = good && ok(dk_client_send(client, "/topic/deploykit.examples", (const uint8_t *)body, strlen(body), headers, 1,
                                     true, &err),
                      err, "send");

    err = NULL;
    good = ok(dk_client_disconnect(client, &err), err, "disconnect") && good;
    if (good) {
        printf("published a commit, a build, an event and a raw message\n");
    }
    return good ? 0 : 1;
}
