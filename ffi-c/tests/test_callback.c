/*
 * Callback subscriptions: 100 messages delivered on the library's I/O thread,
 * counted under a mutex and waited for with a bounded timed wait; blocking
 * calls from a callback are refused; dk_subscription_free() returns only when
 * no callback runs, after which none runs again.
 *
 *   test_callback STOMP_URL
 */
#include "tap.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>

#define MESSAGES 100
#define WAIT_S 30

struct counter {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    dk_client *client;
    pthread_t main_thread;
    int count;
    int in_order;       /* bodies arrived as 0, 1, 2, … */
    int bad_body;       /* a body that is not what was sent */
    int on_main_thread; /* a callback ran on the caller's thread */
    int after_free;     /* a callback ran after dk_subscription_free() returned */
    int freed;
    dk_result send_rc;       /* dk_client_send from inside the callback */
    dk_result disconnect_rc; /* dk_client_disconnect from inside the callback */
    char send_msg[256];
    dk_message *kept; /* a copy made in the callback */
};

static void on_message(const dk_message *msg, void *userdata) {
    struct counter *c = userdata;
    size_t len = 0;
    const uint8_t *body = dk_message_body(msg, &len);
    char text[32] = {0};
    memcpy(text, body, len < sizeof text - 1 ? len : sizeof text - 1);
    int n = atoi(text);

    /* The first message: try what must not be done here (it must fail cleanly). */
    dk_result send_rc = DK_OK, disconnect_rc = DK_OK;
    char send_msg[256] = {0};
    dk_message *kept = NULL;
    if (n == 0) {
        dk_error *err = NULL;
        send_rc = dk_client_send(c->client, "/topic/dk-c-test.never", (const uint8_t *)"x", 1, NULL, 0, false, &err);
        if (err != NULL) {
            snprintf(send_msg, sizeof send_msg, "%s", dk_error_message(err));
        }
        dk_error_free(err);
        disconnect_rc = dk_client_disconnect(c->client, NULL);
        dk_message_copy(msg, &kept, NULL);
    }

    pthread_mutex_lock(&c->lock);
    if (c->freed) {
        c->after_free++;
    }
    if (n != c->count) {
        c->in_order = 0;
    }
    if (len == 0 || len >= sizeof text) {
        c->bad_body++;
    }
    if (pthread_equal(pthread_self(), c->main_thread)) {
        c->on_main_thread++;
    }
    if (n == 0) {
        c->send_rc = send_rc;
        c->disconnect_rc = disconnect_rc;
        memcpy(c->send_msg, send_msg, sizeof send_msg);
        c->kept = kept;
    }
    c->count++;
    pthread_cond_broadcast(&c->changed);
    pthread_mutex_unlock(&c->lock);
}

/* Waits (bounded) until `count` reaches `want`; returns the count reached. */
static int wait_for(struct counter *c, int want) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += WAIT_S;
    pthread_mutex_lock(&c->lock);
    while (c->count < want) {
        if (pthread_cond_timedwait(&c->changed, &c->lock, &deadline) == ETIMEDOUT) {
            break;
        }
    }
    int got = c->count;
    pthread_mutex_unlock(&c->lock);
    return got;
}

/* ---- dk_subscription_free while a callback runs ---- */

struct slow {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    int running; /* a callback is between its first and last statement */
    int calls;
};

static void slow_callback(const dk_message *msg, void *userdata) {
    struct slow *s = userdata;
    (void)msg;
    pthread_mutex_lock(&s->lock);
    s->running = 1;
    s->calls++;
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
    /* Stay in the callback a while, so dk_subscription_free is called while it runs. */
    struct timespec pause = {0, 300 * 1000 * 1000};
    nanosleep(&pause, NULL);
    pthread_mutex_lock(&s->lock);
    s->running = 0;
    pthread_mutex_unlock(&s->lock);
}

static void free_waits_for_a_running_callback(dk_client *client, const char *dest) {
    struct slow *s = calloc(1, sizeof *s);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->changed, NULL);
    dk_subscription *sub = NULL;
    if (EXPECT_RC(dk_client_subscribe_callback(client, dest, DK_ACK_AUTO, slow_callback, s, &sub, &E), DK_OK, NULL,
                  "subscribe_callback (slow callback)")) {
        dk_client_send(client, dest, (const uint8_t *)"slow", 4, NULL, 0, true, NULL);
        struct timespec deadline;
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += WAIT_S;
        pthread_mutex_lock(&s->lock);
        while (s->calls == 0 && pthread_cond_timedwait(&s->changed, &s->lock, &deadline) != ETIMEDOUT) {
        }
        int started = s->calls > 0;
        pthread_mutex_unlock(&s->lock);
        CHECK(started, "slow callback started");
        dk_subscription_free(sub);
        pthread_mutex_lock(&s->lock);
        int running = s->running;
        pthread_mutex_unlock(&s->lock);
        CHECK(running == 0, "dk_subscription_free returned only after the running callback finished");
    }
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->changed);
    free(s);
}

int main(int argc, char **argv) {
    const char *url = test_url(argc, argv);
    char dest[128];
    snprintf(dest, sizeof dest, "/topic/dk-c-test.%ld.callback", (long)getpid());
    dk_connect_options o = test_options();
    dk_client *client = NULL;
    if (!EXPECT_RC(dk_client_connect(url, &o, &client, &E), DK_OK, NULL, "connect")) {
        return tap_done("test_callback");
    }

    struct counter *c = calloc(1, sizeof *c);
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->changed, NULL);
    c->client = client;
    c->main_thread = pthread_self();
    c->in_order = 1;

    dk_subscription *sub = NULL;
    if (!EXPECT_RC(dk_client_subscribe_callback(client, dest, DK_ACK_AUTO, on_message, c, &sub, &E), DK_OK, NULL,
                   "subscribe_callback")) {
        dk_client_free(client);
        free(c);
        return tap_done("test_callback");
    }
    /* A polled subscription on the same topic, to know when later messages have arrived. */
    dk_subscription *probe = NULL;
    EXPECT_RC(dk_client_subscribe(client, dest, DK_ACK_AUTO, &probe, &E), DK_OK, NULL, "subscribe (probe)");

    int send_failures = 0;
    for (int i = 0; i < MESSAGES; i++) {
        char body[16];
        int n = snprintf(body, sizeof body, "%d", i);
        if (dk_client_send(client, dest, (const uint8_t *)body, (size_t)n, NULL, 0, i == MESSAGES - 1, NULL) != DK_OK) {
            send_failures++;
        }
    }
    CHECK(send_failures == 0, "sent %d messages", MESSAGES);
    int got = wait_for(c, MESSAGES);
    CHECK(got == MESSAGES, "callback received %d of %d messages within %ds", got, MESSAGES, WAIT_S);

    pthread_mutex_lock(&c->lock);
    CHECK(c->in_order, "callback: messages in order");
    CHECK(c->bad_body == 0, "callback: every body as sent");
    CHECK(c->on_main_thread == 0, "callback: runs on the library's thread, not the caller's");
    CHECK(c->send_rc == DK_ERR_IN_CALLBACK, "callback: dk_client_send inside is DK_ERR_IN_CALLBACK (%u)", (unsigned)c->send_rc);
    CHECK(strstr(c->send_msg, "dk_client_send") != NULL, "callback: the error names the call (%s)", c->send_msg);
    CHECK(c->disconnect_rc == DK_ERR_IN_CALLBACK, "callback: dk_client_disconnect inside is DK_ERR_IN_CALLBACK");
    dk_message *kept = c->kept;
    pthread_mutex_unlock(&c->lock);
    size_t len = 0;
    const uint8_t *b = dk_message_body(kept, &len);
    CHECK(kept != NULL && len == 1 && b[0] == '0' && strcmp(dk_message_destination(kept), dest) == 0,
          "callback: a copy made inside outlives the callback");
    dk_message_free(kept);

    /* Drain the probe, so it does not hold messages. */
    int probed = 0;
    for (; probed < MESSAGES; probed++) {
        dk_message *m = NULL;
        if (dk_subscription_next(probe, 20000, &m, NULL) != DK_OK || m == NULL) {
            break;
        }
        dk_message_free(m);
    }
    CHECK(probed == MESSAGES, "probe saw the %d messages too", MESSAGES);

    dk_subscription_free(sub);
    pthread_mutex_lock(&c->lock);
    c->freed = 1;
    pthread_mutex_unlock(&c->lock);
    CHECK(1, "dk_subscription_free returned");

    /* More messages: the probe gets them, the freed callback must not. */
    for (int i = 0; i < 10; i++) {
        dk_client_send(client, dest, (const uint8_t *)"late", 4, NULL, 0, i == 9, NULL);
    }
    int late = 0;
    for (; late < 10; late++) {
        dk_message *m = NULL;
        if (dk_subscription_next(probe, 20000, &m, NULL) != DK_OK || m == NULL) {
            break;
        }
        dk_message_free(m);
    }
    CHECK(late == 10, "probe received the 10 late messages");
    pthread_mutex_lock(&c->lock);
    CHECK(c->after_free == 0 && c->count == MESSAGES, "no callback after dk_subscription_free (%d late calls)", c->after_free);
    pthread_mutex_unlock(&c->lock);

    /* userdata may be freed now: valgrind would see any later callback touch it. */
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->changed);
    free(c);

    dk_subscription_free(probe);
    free_waits_for_a_running_callback(client, dest);
    EXPECT_RC(dk_client_disconnect(client, &E), DK_OK, NULL, "disconnect");
    return tap_done("test_callback");
}
