/*
 * subscribe: print the deploykit messages arriving on a destination, polling
 * with a timeout; stops after COUNT messages, or after SECONDS without one.
 *
 *   ./subscribe [URL [DESTINATION [COUNT [SECONDS]]]]
 *     URL          default: $DK_BROKER_URL, else stomp://127.0.0.1:61613
 *     DESTINATION  default: /topic/deploykit.events
 *     COUNT        default: 0 (no limit)
 *     SECONDS      default: 0 (no limit)
 *
 * (A callback subscription, dk_client_subscribe_callback(), delivers on the
 * library's I/O thread instead; see ffi-c/README.md.)
 */
#include <deploykit.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *kind_name(dk_kind kind) {
    switch (kind) {
    case DK_KIND_COMMIT: return "commit";
    case DK_KIND_BUILD: return "build";
    case DK_KIND_PACKAGE: return "package";
    case DK_KIND_EVENT: return "event";
    case DK_KIND_DEPLOY_REQUEST: return "deploy-request";
    case DK_KIND_DEPLOY_REPLY: return "deploy-reply";
    case DK_KIND_AGENT_ANNOUNCE: return "agent-announce";
    case DK_KIND_KEEPALIVE: return "keepalive";
    default: return "unknown";
    }
}

int main(int argc, char **argv) {
    const char *url = argc > 1 ? argv[1] : getenv("DK_BROKER_URL");
    const char *dest = argc > 2 ? argv[2] : "/topic/deploykit.events";
    long count = argc > 3 ? atol(argv[3]) : 0;
    long seconds = argc > 4 ? atol(argv[4]) : 0;
    if (url == NULL) {
        url = "stomp://127.0.0.1:61613";
    }

    dk_connect_options opts;
    memset(&opts, 0, sizeof opts);
    opts.connect_attempts = 3;
    dk_client *client = NULL;
    dk_subscription *sub = NULL;
    dk_error *err = NULL;
    if (dk_client_connect(url, &opts, &client, &err) != DK_OK ||
        dk_client_subscribe(client, dest, DK_ACK_AUTO, &sub, &err) != DK_OK) {
        fprintf(stderr, "subscribe: %s\n", dk_error_message(err));
        dk_error_free(err);
        dk_client_free(client);
        return 1;
    }
    printf("subscribed to %s\n", dest);
    fflush(stdout);

    int status = 0;
    for (long n = 0; count == 0 || n < count; n++) {
        dk_message *msg = NULL;
        uint32_t timeout = seconds > 0 ? (uint32_t)(seconds * 1000) : DK_TIMEOUT_INFINITE;
        if (dk_subscription_next(sub, timeout, &msg, &err) != DK_OK) {
            fprintf(stderr, "subscribe: %s\n", dk_error_message(err));
            dk_error_free(err);
            status = 1;
            break;
        }
        if (msg == NULL) {
            fprintf(stderr, "subscribe: nothing for %lds, stopping\n", seconds);
            status = 2;
            break;
        }
        size_t len = 0;
        const uint8_t *body = dk_message_body(msg, &len);
        printf("%s %s: %.*s\n", kind_name(dk_message_kind(msg)), dk_message_destination(msg), (int)len,
               (const char *)body);
        fflush(stdout);
        dk_message_free(msg);
    }
    dk_subscription_free(sub);
    dk_client_disconnect(client, NULL);
    return status;
}
