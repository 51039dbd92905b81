/*
 * Publish and receive through a real broker: raw sends with headers and a
 * binary body, typed commits (JSON and legacy wire), builds and events, client
 * acknowledgements, default destinations, and what a closed client reports.
 *
 *   test_pubsub STOMP_URL
 */
#include "tap.h"

#include <stdint.h>

#define WAIT_MS 20000

static char prefix[48];

/* "/topic/dk-c-test.PID.NAME" in buf. */
static const char *topic(char *buf, size_t size, const char *name) {
    snprintf(buf, size, "/topic/%s.%s", prefix, name);
    return buf;
}

/* Receives one message (or NULL after WAIT_MS), checking the call itself. */
static dk_message *receive(dk_subscription *s, const char *what) {
    dk_message *m = NULL;
    char name[160];
    snprintf(name, sizeof name, "%s: next returns DK_OK", what);
    EXPECT_RC(dk_subscription_next(s, WAIT_MS, &m, &E), DK_OK, NULL, name);
    CHECK(m != NULL, "%s: a message arrived", what);
    return m;
}

/* Whether the body equals the C string `text` (as bytes, without its NUL). */
static int body_contains(const dk_message *m, const char *text) {
    size_t len = 0;
    const uint8_t *b = dk_message_body(m, &len);
    size_t n = strlen(text);
    for (size_t i = 0; b != NULL && i + n <= len; i++) {
        if (memcmp(b + i, text, n) == 0) {
            return 1;
        }
    }
    return 0;
}

static int header_is(const dk_message *m, const char *name, const char *want) {
    const char *v = dk_message_header(m, name);
    return v != NULL && strcmp(v, want) == 0;
}

static dk_subscription *subscribe(dk_client *c, const char *dest, dk_ack_mode ack) {
    dk_subscription *s = NULL;
    char name[200];
    snprintf(name, sizeof name, "subscribe %s", dest);
    EXPECT_RC(dk_client_subscribe(c, dest, ack, &s, &E), DK_OK, NULL, name);
    return s;
}

static void raw_send(dk_client *c) {
    char dest[160];
    dk_subscription *s = subscribe(c, topic(dest, sizeof dest, "raw"), DK_ACK_AUTO);
    if (s == NULL) {
        return;
    }
    const uint8_t body[] = {'b', 'i', 'n', 0, 0xff, 0x00, '\n', 0x7f, 0};
    dk_header headers[] = {{"x-dk-one", "1"}, {"x-dk-words", "two words: and a colon"}, {"x-dk-utf8", "caf\xc3\xa9"}};
    EXPECT_RC(dk_client_send(c, dest, body, sizeof body, headers, 3, true, &E), DK_OK, NULL,
              "send: binary body with NULs, 3 headers, receipt");
    dk_message *m = receive(s, "raw");
    if (m != NULL) {
        size_t len = 0;
        const uint8_t *got = dk_message_body(m, &len);
        CHECK(len == sizeof body && memcmp(got, body, len) == 0, "raw: same %zu bytes, NULs included (got %zu)", sizeof body, len);
        CHECK(strcmp(dk_message_destination(m), dest) == 0, "raw: destination is %s", dest);
        CHECK(header_is(m, "x-dk-one", "1"), "raw: header x-dk-one");
        CHECK(header_is(m, "x-dk-words", "two words: and a colon"), "raw: header with spaces and a colon");
        CHECK(header_is(m, "x-dk-utf8", "caf\xc3\xa9"), "raw: UTF-8 header value");
        CHECK(dk_message_header(m, "x-dk-absent") == NULL, "raw: absent header is NULL");
        CHECK(dk_message_header(m, NULL) == NULL, "raw: header(msg, NULL) is NULL");
        const char *hv = NULL;
        CHECK(dk_message_header_at(m, 0, NULL, &hv) == DK_ERR_NULL_ARGUMENT && hv == NULL &&
                  dk_message_header_at(m, 0, &hv, NULL) == DK_ERR_NULL_ARGUMENT && hv == NULL,
              "raw: header_at with a NULL out-parameter is DK_ERR_NULL_ARGUMENT");
        EXPECT_RC(dk_message_copy(m, NULL, &E), DK_ERR_NULL_ARGUMENT, "out", "raw: copy with NULL out");
        EXPECT_RC(dk_message_decode(m, NULL, &E), DK_ERR_MESSAGE_UNRECOGNISED, NULL, "raw: decode with NULL kind only checks");
        size_t n = dk_message_header_count(m), found = 0;
        for (size_t i = 0; i < n; i++) {
            const char *k = NULL, *v = NULL;
            if (dk_message_header_at(m, i, &k, &v) == DK_OK && strcmp(k, "x-dk-one") == 0 && strcmp(v, "1") == 0) {
                found++;
            }
        }
        CHECK(n >= 3 && found == 1, "raw: header_at walks %zu headers, x-dk-one once", n);
        const char *k = "unchanged";
        CHECK(dk_message_header_at(m, n, &k, &k) == DK_ERR_INVALID_ARGUMENT && strcmp(k, "unchanged") == 0,
              "raw: header_at past the end is DK_ERR_INVALID_ARGUMENT, out untouched");
        CHECK(dk_message_kind(m) == DK_KIND_UNKNOWN, "raw: kind of a non-deploykit message is DK_KIND_UNKNOWN");
        dk_kind kind = DK_KIND_BUILD;
        EXPECT_RC(dk_message_decode(m, &kind, &E), DK_ERR_MESSAGE_UNRECOGNISED, "UTF-8",
                  "raw: decode says why (not UTF-8, no dk-type)");
        CHECK(kind == DK_KIND_BUILD, "raw: decode leaves *kind on failure");

        dk_message *copy = NULL;
        EXPECT_RC(dk_message_copy(m, &copy, &E), DK_OK, NULL, "raw: copy");
        dk_message_free(m);
        size_t clen = 0;
        const uint8_t *cb = dk_message_body(copy, &clen);
        CHECK(copy != NULL && clen == sizeof body && memcmp(cb, body, clen) == 0 && header_is(copy, "x-dk-one", "1"),
              "raw: the copy outlives the original");
        dk_message_free(copy);
    }

    /* An empty body, and a text one without receipt. */
    EXPECT_RC(dk_client_send(c, dest, NULL, 0, NULL, 0, true, &E), DK_OK, NULL, "send: empty body");
    m = receive(s, "empty");
    if (m != NULL) {
        size_t len = 99;
        const uint8_t *b = dk_message_body(m, &len);
        CHECK(b != NULL && len == 0, "empty: body is non-NULL with length 0");
        dk_message_free(m);
    }
    EXPECT_RC(dk_client_send(c, dest, (const uint8_t *)"\n", 1, NULL, 0, false, &E), DK_OK, NULL,
              "send: keepalive body without receipt");
    m = receive(s, "keepalive");
    if (m != NULL) {
        CHECK(dk_message_kind(m) == DK_KIND_KEEPALIVE, "keepalive: kind DK_KIND_KEEPALIVE");
        dk_message_free(m);
    }

    dk_message *none = (dk_message *)(uintptr_t)0x1;
    double t0 = now_s();
    EXPECT_RC(dk_subscription_next(s, 200, &none, &E), DK_OK, NULL, "next: timeout is DK_OK");
    double took = now_s() - t0;
    CHECK(none == NULL, "next: timeout stores NULL");
    CHECK(took >= 0.15 && took < 5.0, "next: waited about the timeout (%.2fs)", took);
    dk_subscription_free(s);
}

static void commits(dk_client *c) {
    char commits_dest[160], events_dest[160], cid[96];
    dk_subscription *sc = subscribe(c, topic(commits_dest, sizeof commits_dest, "commits"), DK_ACK_AUTO);
    dk_subscription *se = subscribe(c, topic(events_dest, sizeof events_dest, "events"), DK_ACK_AUTO);
    if (sc == NULL || se == NULL) {
        dk_subscription_free(sc);
        dk_subscription_free(se);
        return;
    }
    snprintf(cid, sizeof cid, "%s-delivery-1", prefix);
    dk_commit_info infos[] = {
        {"2222222222222222222222222222222222222222", "Ada <ada@example.org>", "2024-05-01T12:00:00Z", "Fix the thing\n\nLonger text."},
        {"3333333333333333333333333333333333333333", "Bob <bob@example.org>", "2024-05-01T11:00:00Z", "Start the thing"},
    };
    dk_commit commit;
    memset(&commit, 0, sizeof commit);
    commit.repo = "site";
    commit.oldrev = "1111111111111111111111111111111111111111";
    commit.newrev = "2222222222222222222222222222222222222222";
    commit.refname = "refs/heads/main";
    commit.source = DK_SOURCE_GITHUB;
    commit.commits = infos;
    commit.n_commits = 2;
    commit.correlation_id = cid;
    dk_publish_options o;
    memset(&o, 0, sizeof o);
    o.source = "c-test";
    o.commits_destination = commits_dest;
    o.events_destination = events_dest;

    EXPECT_RC(dk_publish_commit(c, &commit, &o, &E), DK_OK, NULL, "publish_commit (json)");
    dk_message *m = receive(sc, "commit json");
    if (m != NULL) {
        CHECK(dk_message_kind(m) == DK_KIND_COMMIT, "commit json: kind DK_KIND_COMMIT");
        CHECK(header_is(m, "dk-type", "commit") && header_is(m, "dk-version", "1"), "commit json: dk-type and dk-version headers");
        CHECK(header_is(m, "dk-correlation-id", cid), "commit json: correlation id header");
        CHECK(header_is(m, "subject", "[site] refs/heads/main 2222222222222222222222222222222222222222"),
              "commit json: legacy subject header");
        CHECK(body_contains(m, "\"source\":\"github\"") && body_contains(m, "Ada <ada@example.org>"),
              "commit json: body has the source and the commits");
        dk_kind kind = DK_KIND_UNKNOWN;
        EXPECT_RC(dk_message_decode(m, &kind, &E), DK_OK, NULL, "commit json: decodes");
        CHECK(kind == DK_KIND_COMMIT, "commit json: decode stores DK_KIND_COMMIT");
        dk_message_free(m);
    }
    m = receive(se, "commit event");
    if (m != NULL) {
        CHECK(dk_message_kind(m) == DK_KIND_EVENT && body_contains(m, "c-test") && header_is(m, "dk-correlation-id", cid),
              "commit event: an event line from c-test with the correlation id");
        dk_message_free(m);
    }

    o.wire = DK_WIRE_LEGACY;
    commit.correlation_id = NULL;
    commit.source = DK_SOURCE_GIT;
    EXPECT_RC(dk_publish_commit(c, &commit, &o, &E), DK_OK, NULL, "publish_commit (legacy wire)");
    m = receive(sc, "commit legacy");
    if (m != NULL) {
        CHECK(dk_message_kind(m) == DK_KIND_COMMIT, "commit legacy: kind DK_KIND_COMMIT");
        CHECK(dk_message_header(m, "dk-type") == NULL, "commit legacy: no dk-type header");
        CHECK(body_contains(m, "refname: refs/heads/main") && body_contains(m, "repo: site"),
              "commit legacy: the original text body");
        CHECK(header_is(m, "dk-correlation-id", "2222222222222222222222222222222222222222"),
              "commit legacy: correlation id defaults to newrev");
        dk_message_free(m);
    }
    m = receive(se, "legacy event");
    dk_message_free(m);

    /* Subversion. */
    const char *dirs[] = {"proj/trunk/src", "proj/trunk/doc"};
    dk_svn_info svn = {42, "proj", dirs, 2};
    dk_commit_info svn_info = {"42", "carol", "2024-05-02T09:00:00Z", "svn change"};
    dk_commit sc_commit;
    memset(&sc_commit, 0, sizeof sc_commit);
    sc_commit.repo = "svnrepo";
    sc_commit.newrev = "42";
    sc_commit.source = DK_SOURCE_SVN;
    sc_commit.svn = &svn;
    sc_commit.commits = &svn_info;
    sc_commit.n_commits = 1;
    o.wire = DK_WIRE_JSON;
    EXPECT_RC(dk_publish_commit(c, &sc_commit, &o, &E), DK_OK, NULL, "publish_commit (svn)");
    m = receive(sc, "commit svn");
    if (m != NULL) {
        CHECK(dk_message_kind(m) == DK_KIND_COMMIT && body_contains(m, "\"revision\":42") && body_contains(m, "proj/trunk/doc") &&
                  header_is(m, "dk-correlation-id", "svn:svnrepo:42"),
              "commit svn: revision, dirs and svn correlation id");
        dk_message_free(m);
    }
    m = receive(se, "svn event");
    dk_message_free(m);
    dk_subscription_free(sc);
    dk_subscription_free(se);
}

static void builds_and_events(dk_client *c) {
    char builds[160], failed[160], events[160];
    dk_subscription *sb = subscribe(c, topic(builds, sizeof builds, "builds"), DK_ACK_AUTO);
    dk_subscription *sf = subscribe(c, topic(failed, sizeof failed, "builds-failed"), DK_ACK_AUTO);
    dk_subscription *se = subscribe(c, topic(events, sizeof events, "build-events"), DK_ACK_AUTO);
    if (sb == NULL || sf == NULL || se == NULL) {
        goto out;
    }
    dk_publish_options o;
    memset(&o, 0, sizeof o);
    o.source = "jenkins";
    o.builds_destination = builds;
    o.builds_failed_destination = failed;
    o.events_destination = events;
    dk_build b;
    memset(&b, 0, sizeof b);
    b.job = "site/main";
    b.number = 17;
    b.status = DK_BUILD_SUCCESS;
    b.url = "https://ci.example.org/job/site/17/";
    b.branch = "origin/main";
    b.commit = "2222222222222222222222222222222222222222";
    b.duration_ms = 65432;
    b.correlation_id = "corr-17";
    EXPECT_RC(dk_publish_build(c, &b, &o, &E), DK_OK, NULL, "publish_build (success)");
    dk_message *m = receive(sb, "build");
    if (m != NULL) {
        CHECK(dk_message_kind(m) == DK_KIND_BUILD && header_is(m, "dk-type", "build") && body_contains(m, "\"status\":\"success\"") &&
                  body_contains(m, "\"duration_ms\":65432") && header_is(m, "dk-correlation-id", "corr-17"),
              "build: kind, status, duration and correlation id");
        dk_message_free(m);
    }
    m = receive(se, "build event");
    if (m != NULL) {
        CHECK(dk_message_kind(m) == DK_KIND_EVENT && body_contains(m, "jenkins"), "build event: an event from jenkins");
        dk_message_free(m);
    }
    b.status = DK_BUILD_FAILURE;
    b.number = 18;
    b.duration_ms = 0;
    EXPECT_RC(dk_publish_build(c, &b, &o, &E), DK_OK, NULL, "publish_build (failure)");
    m = receive(sf, "failed build");
    if (m != NULL) {
        CHECK(dk_message_kind(m) == DK_KIND_BUILD && body_contains(m, "\"failure\"") && !body_contains(m, "duration_ms"),
              "failed build: to builds_failed_destination, no duration");
        dk_message_free(m);
    }
    m = receive(se, "failed build event");
    dk_message_free(m);
    o.wire = DK_WIRE_LEGACY;
    b.status = DK_BUILD_STARTED;
    EXPECT_RC(dk_publish_build(c, &b, &o, &E), DK_OK, NULL, "publish_build (started, legacy wire)");
    m = receive(sb, "legacy build");
    if (m != NULL) {
        CHECK(dk_message_kind(m) == DK_KIND_BUILD && dk_message_header(m, "dk-type") == NULL, "legacy build: kind from the text body");
        dk_message_free(m);
    }
    m = receive(se, "legacy build event");
    dk_message_free(m);

    o.wire = DK_WIRE_JSON;
    EXPECT_RC(dk_publish_event(c, "deploys", "deployed site 1.2 to web01", "corr-9", &o, &E), DK_OK, NULL, "publish_event");
    m = receive(se, "event");
    if (m != NULL) {
        CHECK(dk_message_kind(m) == DK_KIND_EVENT && header_is(m, "dk-type", "event") && body_contains(m, "\"source\":\"deploys\"") &&
                  body_contains(m, "deployed site 1.2 to web01") && header_is(m, "dk-correlation-id", "corr-9"),
              "event: source argument wins over opts->source, text and correlation id");
        dk_message_free(m);
    }
out:
    dk_subscription_free(sb);
    dk_subscription_free(sf);
    dk_subscription_free(se);
}

static void default_destinations(dk_client *c) {
    dk_subscription *s = subscribe(c, "/topic/deploykit.git.commits", DK_ACK_AUTO);
    if (s == NULL) {
        return;
    }
    char cid[96];
    snprintf(cid, sizeof cid, "%s-default", prefix);
    dk_commit commit;
    memset(&commit, 0, sizeof commit);
    commit.repo = "site";
    commit.newrev = "4444444444444444444444444444444444444444";
    commit.refname = "refs/tags/v1.0";
    commit.correlation_id = cid;
    EXPECT_RC(dk_publish_commit(c, &commit, NULL, &E), DK_OK, NULL, "publish_commit with NULL options");
    /* Other publishers may share this topic on a real broker: skip what is not ours. */
    int found = 0;
    for (int i = 0; i < 50 && !found; i++) {
        dk_message *m = NULL;
        if (dk_subscription_next(s, WAIT_MS, &m, NULL) != DK_OK || m == NULL) {
            break;
        }
        found = header_is(m, "dk-correlation-id", cid) && dk_message_kind(m) == DK_KIND_COMMIT;
        dk_message_free(m);
    }
    CHECK(found, "default options: the commit arrives on /topic/deploykit.git.commits");
    dk_subscription_free(s);
}

static void acknowledgements(dk_client *c) {
    char dest[160];
    dk_subscription *s = subscribe(c, topic(dest, sizeof dest, "acks"), DK_ACK_CLIENT_INDIVIDUAL);
    if (s == NULL) {
        return;
    }
    EXPECT_RC(dk_client_send(c, dest, (const uint8_t *)"one", 3, NULL, 0, true, &E), DK_OK, NULL, "send for ack");
    dk_message *m = receive(s, "ack");
    if (m != NULL) {
        EXPECT_RC(dk_subscription_ack(s, m, &E), DK_OK, NULL, "ack (client-individual)");
        dk_message_free(m);
    }
    EXPECT_RC(dk_client_send(c, dest, (const uint8_t *)"two", 3, NULL, 0, true, &E), DK_OK, NULL, "send for nack");
    m = receive(s, "nack");
    if (m != NULL) {
        EXPECT_RC(dk_subscription_nack(s, m, &E), DK_OK, NULL, "nack (client-individual)");
        dk_message_free(m);
    }
    dk_subscription_free(s);
}

static void threads_share_a_client(dk_client *c);

/* dk_client_send_many: 200 bodies in order (one empty, one with NULs), the
 * headers on each, one receipt that confirms them all; a partly bad call sends nothing. */
static void batches(dk_client *c) {
    char dest[160];
    dk_subscription *s = subscribe(c, topic(dest, sizeof dest, "many"), DK_ACK_AUTO);
    if (s == NULL) {
        return;
    }
    enum { N = 200 };
    static char text[N][16];
    dk_body bodies[N];
    for (int i = 0; i < N; i++) {
        int n = snprintf(text[i], sizeof text[i], "many-%d", i);
        bodies[i] = (dk_body){(const uint8_t *)text[i], (size_t)n};
    }
    const uint8_t nuls[] = {'a', 0, 'b', 0};
    bodies[7] = (dk_body){NULL, 0};
    bodies[8] = (dk_body){nuls, sizeof nuls};
    dk_header headers[] = {{"x-dk-batch", "yes"}};
    EXPECT_RC(dk_client_send_many(c, dest, bodies, N, headers, 1, true, &E), DK_OK, NULL,
              "send_many: 200 bodies, one header, a receipt");
    int in_order = 0, with_header = 0;
    for (int i = 0; i < N; i++) {
        dk_message *m = NULL;
        if (dk_subscription_next(s, WAIT_MS, &m, NULL) != DK_OK || m == NULL) {
            break;
        }
        size_t len = 0;
        const uint8_t *b = dk_message_body(m, &len);
        if (len == bodies[i].len && (len == 0 || memcmp(b, bodies[i].data, len) == 0)) {
            in_order++;
        }
        with_header += header_is(m, "x-dk-batch", "yes");
        dk_message_free(m);
    }
    CHECK(in_order == N, "send_many: all %d arrived, in order, bytes intact (%d)", N, in_order);
    CHECK(with_header == N, "send_many: each carries the header (%d)", with_header);

    dk_body bad[] = {{(const uint8_t *)"first", 5}, {NULL, 1}};
    EXPECT_RC(dk_client_send_many(c, dest, bad, 2, NULL, 0, false, &E), DK_ERR_NULL_ARGUMENT, "bodies[1].data",
              "send_many: a bad body refuses the call");
    EXPECT_RC(dk_client_send(c, dest, (const uint8_t *)"after", 5, NULL, 0, true, &E), DK_OK, NULL, "send after the refusal");
    dk_message *m = receive(s, "after the refusal");
    if (m != NULL) {
        CHECK(body_contains(m, "after") && !body_contains(m, "first"), "send_many: nothing of the refused call was sent");
        dk_message_free(m);
    }
    dk_subscription_free(s);
}

int main(int argc, char **argv) {
    const char *url = test_url(argc, argv);
    snprintf(prefix, sizeof prefix, "dk-c-test.%ld", (long)getpid());
    dk_connect_options o = test_options();
    o.heartbeat_ms = 2000;
    dk_client *c = NULL;
    if (!EXPECT_RC(dk_client_connect(url, &o, &c, &E), DK_OK, NULL, "connect")) {
        return tap_done("test_pubsub");
    }
    raw_send(c);
    commits(c);
    builds_and_events(c);
    default_destinations(c);
    acknowledgements(c);
    batches(c);
    threads_share_a_client(c);

    /* A subscription outlives its client's disconnect and then reports the close. */
    char dest[160];
    dk_subscription *s = subscribe(c, topic(dest, sizeof dest, "closing"), DK_ACK_AUTO);
    EXPECT_RC(dk_client_disconnect(c, &E), DK_OK, NULL, "disconnect waits for the receipt");
    if (s != NULL) {
        dk_message *m = (dk_message *)(uintptr_t)0x1;
        EXPECT_RC(dk_subscription_next(s, WAIT_MS, &m, &E), DK_ERR_CLOSED, NULL, "next after disconnect: DK_ERR_CLOSED");
        CHECK(m == (dk_message *)(uintptr_t)0x1, "next after disconnect: out untouched");
        dk_subscription_free(s);
    }

    /* dk_client_free without DISCONNECT. */
    c = NULL;
    if (EXPECT_RC(dk_client_connect(url, &o, &c, &E), DK_OK, NULL, "connect again")) {
        dk_client_free(c);
        CHECK(1, "dk_client_free without disconnect");
    }
    return tap_done("test_pubsub");
}

/* ---- several threads sending on one client ---- */

#include <pthread.h>

#define THREADS 4
#define PER_THREAD 25

struct sender {
    dk_client *client;
    const char *dest;
    int id;
    int failures;
};

static void *send_many(void *arg) {
    struct sender *s = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        char body[64];
        int n = snprintf(body, sizeof body, "t%d-%d", s->id, i);
        if (dk_client_send(s->client, s->dest, (const uint8_t *)body, (size_t)n, NULL, 0, i % 5 == 0, NULL) != DK_OK) {
            s->failures++;
        }
    }
    return NULL;
}

static void threads_share_a_client(dk_client *c) {
    char dest[160];
    dk_subscription *s = subscribe(c, topic(dest, sizeof dest, "threads"), DK_ACK_AUTO);
    if (s == NULL) {
        return;
    }
    pthread_t th[THREADS];
    struct sender senders[THREADS];
    for (int i = 0; i < THREADS; i++) {
        senders[i] = (struct sender){c, dest, i, 0};
        pthread_create(&th[i], NULL, send_many, &senders[i]);
    }
    int failures = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        failures += senders[i].failures;
    }
    CHECK(failures == 0, "threads: %d threads sent %d messages on one client", THREADS, THREADS * PER_THREAD);
    int got = 0;
    for (; got < THREADS * PER_THREAD; got++) {
        dk_message *m = NULL;
        if (dk_subscription_next(s, WAIT_MS, &m, NULL) != DK_OK || m == NULL) {
            break;
        }
        dk_message_free(m);
    }
    CHECK(got == THREADS * PER_THREAD, "threads: all %d received (%d)", THREADS * PER_THREAD, got);
    dk_subscription_free(s);
}
