/*
 * Every error path of the C API: bad URLs, a refused connection, bad
 * credentials, every NULL argument, strings that are not UTF-8, out-of-range
 * enum values, NULL-safe frees, error objects and out-parameter rules.
 *
 *   test_errors STOMP_URL     (a running broker; credentials in the URL if it needs them)
 */
#include "tap.h"

#include <stdint.h>

static const char BAD_UTF8[] = {'/', 't', 'o', 'p', 'i', 'c', '/', (char)0xff, (char)0xfe, 0};

static void version_and_codes(void) {
    char want[64];
    snprintf(want, sizeof want, "%d.%d.%d", DK_VERSION_MAJOR, DK_VERSION_MINOR, DK_VERSION_PATCH);
    CHECK(dk_version() != NULL && strcmp(dk_version(), want) == 0, "dk_version() is %s, as the header says", want);
    CHECK(strncmp(dk_result_describe(DK_ERR_TIMEOUT), "DK_ERR_TIMEOUT", 14) == 0, "dk_result_describe names the code");
    CHECK(strcmp(dk_result_describe(12345), "unknown dk_result code") == 0, "dk_result_describe of an unknown code");
    CHECK(dk_error_message(NULL) == NULL && dk_error_code(NULL) == DK_OK, "dk_error accessors accept NULL");
}

static void frees_accept_null(void) {
    dk_error_free(NULL);
    dk_client_free(NULL);
    dk_subscription_free(NULL);
    dk_message_free(NULL);
    CHECK(1, "every _free accepts NULL");
    EXPECT_RC(dk_client_disconnect(NULL, &E), DK_OK, NULL, "dk_client_disconnect(NULL) is DK_OK");
}

static void bad_urls(void) {
    dk_client *c = (dk_client *)(uintptr_t)0x1;
    EXPECT_RC(dk_client_connect("http://127.0.0.1:61613", NULL, &c, &E), DK_ERR_INVALID_URL, "http",
              "bad scheme: DK_ERR_INVALID_URL naming it");
    CHECK(c == (dk_client *)(uintptr_t)0x1, "out-parameter untouched on failure");
    /* The port text is masked (`host:secret` without `@` may be a login and password): the host is named. */
    EXPECT_RC(dk_client_connect("stomp://127.0.0.1:notaport", NULL, &c, &E), DK_ERR_INVALID_URL, "127.0.0.1:***",
              "bad port: DK_ERR_INVALID_URL naming the URL, port text masked");
    EXPECT_RC(dk_client_connect("failover:(stomp://127.0.0.1:1?maxReconnectAttempts=lots", NULL, &c, &E),
              DK_ERR_INVALID_URL, NULL, "broken failover URL: DK_ERR_INVALID_URL");
    EXPECT_RC(dk_client_connect("", NULL, &c, &E), DK_ERR_INVALID_URL, NULL, "empty URL: DK_ERR_INVALID_URL");
    /* No dk_error requested: the code alone. */
    CHECK(dk_client_connect("nope://x", NULL, &c, NULL) == DK_ERR_INVALID_URL, "err may be NULL: the code alone");
    CHECK(c == (dk_client *)(uintptr_t)0x1, "out-parameter still untouched");
}

static void refused_connection(void) {
    dk_connect_options o = test_options();
    o.connect_attempts = 1;
    o.connect_timeout_ms = 5000;
    dk_client *c = NULL;
    double t0 = now_s();
    EXPECT_RC(dk_client_connect("stomp://127.0.0.1:1", &o, &c, &E), DK_ERR_CONNECT, "127.0.0.1:1", "refused connection (port 1): DK_ERR_CONNECT naming the endpoint");
    double took = now_s() - t0;
    CHECK(took < 10.0, "refused connection fails within bounded time (%.2fs)", took);
    CHECK(c == NULL, "no client on failure");

    o.connect_attempts = 3;
    t0 = now_s();
    EXPECT_RC(dk_client_connect("failover:(stomp://127.0.0.1:1,stomp://127.0.0.1:2)", &o, &c, &E), DK_ERR_CONNECT,
              "gave up", "failover list, 3 attempts: DK_ERR_CONNECT (gave up)");
    took = now_s() - t0;
    CHECK(took < 10.0, "failover attempts are bounded (%.2fs)", took);
}

static void bad_credentials(const char *url) {
    dk_connect_options o = test_options();
    o.connect_attempts = 1;
    o.login = "dk-c-test-nobody";
    o.passcode = "wrong";
    dk_client *c = NULL;
    dk_error *err = NULL;
    dk_result rc = dk_client_connect(url, &o, &c, &err);
    const char *msg = err ? dk_error_message(err) : "";
    /* Core reports a refused session as the attempt limit being reached, with the broker's reason. */
    CHECK((rc == DK_ERR_REFUSED || rc == DK_ERR_CONNECT) && err != NULL && strstr(msg, "refused") != NULL,
          "bad passcode: refused (%u: %s)", (unsigned)rc, msg);
    dk_error_free(err);
    dk_client_free(c);
}

static void connect_arguments(const char *url) {
    dk_client *c = NULL;
    EXPECT_RC(dk_client_connect(NULL, NULL, &c, &E), DK_ERR_NULL_ARGUMENT, "url", "connect: NULL url");
    EXPECT_RC(dk_client_connect(url, NULL, NULL, &E), DK_ERR_NULL_ARGUMENT, "out", "connect: NULL out");
    EXPECT_RC(dk_client_connect("stomp://\xff\xfe", NULL, &c, &E), DK_ERR_NOT_UTF8, "url", "connect: url not UTF-8");
    dk_connect_options o = test_options();
    o.vhost = "\xc3\x28";
    EXPECT_RC(dk_client_connect(url, &o, &c, &E), DK_ERR_NOT_UTF8, "vhost", "connect: opts->vhost not UTF-8");
    CHECK(c == NULL, "no client after argument errors");
}

static void ignore_message(const dk_message *msg, void *userdata) {
    (void)msg;
    (void)userdata;
}

static void client_arguments(dk_client *c) {
    const uint8_t body[] = "x";
    dk_header h = {"x-name", "value"};
    dk_header null_name = {NULL, "v"};
    dk_header null_value = {"n", NULL};
    dk_header bad_value = {"n", "\xff"};

    EXPECT_RC(dk_client_send(NULL, "/topic/x", body, 1, NULL, 0, false, &E), DK_ERR_NULL_ARGUMENT, "client",
              "send: NULL client");
    EXPECT_RC(dk_client_send(c, NULL, body, 1, NULL, 0, false, &E), DK_ERR_NULL_ARGUMENT, "destination",
              "send: NULL destination");
    EXPECT_RC(dk_client_send(c, BAD_UTF8, body, 1, NULL, 0, false, &E), DK_ERR_NOT_UTF8, "destination",
              "send: destination not UTF-8");
    EXPECT_RC(dk_client_send(c, "/topic/x", NULL, 5, NULL, 0, false, &E), DK_ERR_NULL_ARGUMENT, "body",
              "send: NULL body with a length");
    EXPECT_RC(dk_client_send(c, "/topic/x", body, 1, NULL, 1, false, &E), DK_ERR_NULL_ARGUMENT, "headers",
              "send: NULL headers with a count");
    EXPECT_RC(dk_client_send(c, "/topic/x", body, 1, &null_name, 1, false, &E), DK_ERR_NULL_ARGUMENT,
              "headers[0].name", "send: NULL header name");
    EXPECT_RC(dk_client_send(c, "/topic/x", body, 1, &null_value, 1, false, &E), DK_ERR_NULL_ARGUMENT,
              "headers[0].value", "send: NULL header value");
    EXPECT_RC(dk_client_send(c, "/topic/x", body, 1, &bad_value, 1, false, &E), DK_ERR_NOT_UTF8,
              "headers[0].value", "send: header value not UTF-8");
    EXPECT_RC(dk_client_send(c, "/topic/dk-c-test.nobody", NULL, 0, &h, 1, true, &E), DK_OK, NULL,
              "send: NULL body with length 0 is an empty body");

    dk_body bodies[] = {{body, 1}, {NULL, 3}};
    EXPECT_RC(dk_client_send_many(NULL, "/topic/x", bodies, 1, NULL, 0, false, &E), DK_ERR_NULL_ARGUMENT, "client",
              "send_many: NULL client");
    EXPECT_RC(dk_client_send_many(c, NULL, bodies, 1, NULL, 0, false, &E), DK_ERR_NULL_ARGUMENT, "destination",
              "send_many: NULL destination");
    EXPECT_RC(dk_client_send_many(c, "/topic/x", NULL, 2, NULL, 0, false, &E), DK_ERR_NULL_ARGUMENT, "bodies",
              "send_many: NULL bodies with a count");
    EXPECT_RC(dk_client_send_many(c, "/topic/x", bodies, 2, NULL, 0, false, &E), DK_ERR_NULL_ARGUMENT,
              "bodies[1].data", "send_many: a NULL body with a length is named");
    EXPECT_RC(dk_client_send_many(c, "/topic/x", bodies, 1, &bad_value, 1, false, &E), DK_ERR_NOT_UTF8,
              "headers[0].value", "send_many: header value not UTF-8");
    EXPECT_RC(dk_client_send_many(c, "/topic/dk-c-test.nobody", NULL, 0, NULL, 0, true, &E), DK_OK, NULL,
              "send_many: no bodies is DK_OK");

    dk_subscription *s = (dk_subscription *)(uintptr_t)0x1;
    EXPECT_RC(dk_client_subscribe(NULL, "/topic/x", DK_ACK_AUTO, &s, &E), DK_ERR_NULL_ARGUMENT, "client",
              "subscribe: NULL client");
    EXPECT_RC(dk_client_subscribe(c, NULL, DK_ACK_AUTO, &s, &E), DK_ERR_NULL_ARGUMENT, "destination",
              "subscribe: NULL destination");
    EXPECT_RC(dk_client_subscribe(c, BAD_UTF8, DK_ACK_AUTO, &s, &E), DK_ERR_NOT_UTF8, "destination",
              "subscribe: destination not UTF-8");
    EXPECT_RC(dk_client_subscribe(c, "/topic/x", DK_ACK_AUTO, NULL, &E), DK_ERR_NULL_ARGUMENT, "out",
              "subscribe: NULL out");
    EXPECT_RC(dk_client_subscribe(c, "/topic/x", 42, &s, &E), DK_ERR_INVALID_ARGUMENT, "ack",
              "subscribe: unknown ack mode");
    CHECK(s == (dk_subscription *)(uintptr_t)0x1, "subscribe: out untouched on failure");
    EXPECT_RC(dk_client_subscribe_callback(c, "/topic/x", DK_ACK_AUTO, NULL, NULL, &s, &E),
              DK_ERR_NULL_ARGUMENT, "callback", "subscribe_callback: NULL callback");
    EXPECT_RC(dk_client_subscribe_callback(NULL, "/topic/x", DK_ACK_AUTO, NULL, NULL, &s, &E),
              DK_ERR_NULL_ARGUMENT, "client", "subscribe_callback: NULL client");
    EXPECT_RC(dk_client_subscribe_callback(c, NULL, DK_ACK_AUTO, ignore_message, NULL, &s, &E), DK_ERR_NULL_ARGUMENT,
              "destination", "subscribe_callback: NULL destination");
    EXPECT_RC(dk_client_subscribe_callback(c, "/topic/x", DK_ACK_AUTO, ignore_message, NULL, NULL, &E),
              DK_ERR_NULL_ARGUMENT, "out", "subscribe_callback: NULL out");
    EXPECT_RC(dk_client_subscribe_callback(c, "/topic/x", 7, ignore_message, NULL, &s, &E), DK_ERR_INVALID_ARGUMENT, "ack",
              "subscribe_callback: unknown ack mode");
    CHECK(s == (dk_subscription *)(uintptr_t)0x1, "subscribe_callback: out untouched on failure");
}

static void subscription_arguments(dk_client *c) {
    dk_message *m = (dk_message *)(uintptr_t)0x1;
    EXPECT_RC(dk_subscription_next(NULL, 0, &m, &E), DK_ERR_NULL_ARGUMENT, "sub", "next: NULL subscription");
    CHECK(m == (dk_message *)(uintptr_t)0x1, "next: out untouched on failure");
    EXPECT_RC(dk_subscription_ack(NULL, NULL, &E), DK_ERR_NULL_ARGUMENT, "sub", "ack: NULL subscription");
    EXPECT_RC(dk_subscription_nack(NULL, NULL, &E), DK_ERR_NULL_ARGUMENT, "sub", "nack: NULL subscription");

    dk_subscription *s = NULL;
    if (EXPECT_RC(dk_client_subscribe(c, "/topic/dk-c-test.args", DK_ACK_CLIENT_INDIVIDUAL, &s, &E), DK_OK, NULL,
                  "subscribe (client-individual)")) {
        EXPECT_RC(dk_subscription_next(s, 0, NULL, &E), DK_ERR_NULL_ARGUMENT, "out", "next: NULL out");
        EXPECT_RC(dk_subscription_ack(s, NULL, &E), DK_ERR_NULL_ARGUMENT, "msg", "ack: NULL message");
        EXPECT_RC(dk_subscription_nack(s, NULL, &E), DK_ERR_NULL_ARGUMENT, "msg", "nack: NULL message");
        dk_subscription_free(s);
    }
    EXPECT_RC(dk_client_subscribe_callback(c, "/topic/x", DK_ACK_CLIENT, ignore_message, NULL, &s, &E),
              DK_ERR_UNSUPPORTED, "DK_ACK_AUTO", "subscribe_callback: client ack is unsupported");
    s = NULL;
    if (EXPECT_RC(dk_client_subscribe_callback(c, "/topic/dk-c-test.args", DK_ACK_AUTO, ignore_message, NULL, &s, &E),
                  DK_OK, NULL, "subscribe_callback")) {
        EXPECT_RC(dk_subscription_next(s, 0, &m, &E), DK_ERR_INVALID_ARGUMENT, "callback",
                  "next on a callback subscription: DK_ERR_INVALID_ARGUMENT");
        dk_subscription_free(s);
    }
}

static void message_arguments(void) {
    size_t len = 99;
    const char *name = NULL, *value = NULL;
    dk_kind kind = DK_KIND_COMMIT;
    dk_message *copy = (dk_message *)(uintptr_t)0x1;
    CHECK(dk_message_destination(NULL) == NULL, "message: destination(NULL) is NULL");
    CHECK(dk_message_body(NULL, &len) == NULL && len == 0, "message: body(NULL) is NULL, length 0");
    CHECK(dk_message_body(NULL, NULL) == NULL, "message: body(NULL, NULL)");
    CHECK(dk_message_header(NULL, "x") == NULL, "message: header(NULL) is NULL");
    CHECK(dk_message_header_count(NULL) == 0, "message: header_count(NULL) is 0");
    CHECK(dk_message_header_at(NULL, 0, &name, &value) == DK_ERR_NULL_ARGUMENT && name == NULL,
          "message: header_at(NULL) is DK_ERR_NULL_ARGUMENT");
    CHECK(dk_message_kind(NULL) == DK_KIND_UNKNOWN, "message: kind(NULL) is DK_KIND_UNKNOWN");
    EXPECT_RC(dk_message_decode(NULL, &kind, &E), DK_ERR_NULL_ARGUMENT, "msg", "message: decode(NULL)");
    CHECK(kind == DK_KIND_COMMIT, "message: decode leaves *kind on failure");
    EXPECT_RC(dk_message_copy(NULL, &copy, &E), DK_ERR_NULL_ARGUMENT, "msg", "message: copy(NULL)");
    CHECK(copy == (dk_message *)(uintptr_t)0x1, "message: copy leaves *out on failure");
}

static void publish_arguments(dk_client *c) {
    dk_commit commit;
    memset(&commit, 0, sizeof commit);
    commit.repo = "site";
    commit.refname = "refs/heads/main";
    commit.newrev = "1111111111111111111111111111111111111111";
    dk_build build;
    memset(&build, 0, sizeof build);
    build.job = "site-build";
    build.number = 1;
    dk_publish_options o;
    memset(&o, 0, sizeof o);

    EXPECT_RC(dk_publish_commit(NULL, &commit, NULL, &E), DK_ERR_NULL_ARGUMENT, "client", "publish_commit: NULL client");
    EXPECT_RC(dk_publish_commit(c, NULL, NULL, &E), DK_ERR_NULL_ARGUMENT, "commit", "publish_commit: NULL commit");
    commit.repo = NULL;
    EXPECT_RC(dk_publish_commit(c, &commit, NULL, &E), DK_ERR_NULL_ARGUMENT, "commit->repo",
              "publish_commit: NULL repo");
    commit.repo = "\xff";
    EXPECT_RC(dk_publish_commit(c, &commit, NULL, &E), DK_ERR_NOT_UTF8, "commit->repo",
              "publish_commit: repo not UTF-8");
    commit.repo = "";
    EXPECT_RC(dk_publish_commit(c, &commit, NULL, &E), DK_ERR_MESSAGE_INVALID, "repo",
              "publish_commit: empty repo is DK_ERR_MESSAGE_INVALID");
    commit.repo = "site";
    commit.refname = NULL;
    EXPECT_RC(dk_publish_commit(c, &commit, NULL, &E), DK_ERR_MESSAGE_INVALID, "refname",
              "publish_commit: git commit without refname");
    commit.refname = "refs/heads/main";
    commit.source = 77;
    EXPECT_RC(dk_publish_commit(c, &commit, NULL, &E), DK_ERR_INVALID_ARGUMENT, "commit->source",
              "publish_commit: unknown source");
    commit.source = DK_SOURCE_GIT;
    commit.n_commits = 2;
    EXPECT_RC(dk_publish_commit(c, &commit, NULL, &E), DK_ERR_NULL_ARGUMENT, "commit->commits",
              "publish_commit: NULL commits array with a count");
    commit.n_commits = 0;
    dk_svn_info svn;
    memset(&svn, 0, sizeof svn);
    svn.n_dirs = 1;
    commit.svn = &svn;
    EXPECT_RC(dk_publish_commit(c, &commit, NULL, &E), DK_ERR_NULL_ARGUMENT, "commit->svn->dirs",
              "publish_commit: NULL svn dirs with a count");
    commit.svn = NULL;
    o.wire = 9;
    EXPECT_RC(dk_publish_commit(c, &commit, &o, &E), DK_ERR_INVALID_ARGUMENT, "opts->wire",
              "publish_commit: unknown wire");
    o.wire = DK_WIRE_JSON;
    o.destinations = 5;
    EXPECT_RC(dk_publish_commit(c, &commit, &o, &E), DK_ERR_INVALID_ARGUMENT, "opts->destinations",
              "publish_commit: unknown destinations set");
    o.destinations = DK_DESTINATIONS_DEFAULT;
    o.commits_destination = "\xff";
    EXPECT_RC(dk_publish_commit(c, &commit, &o, &E), DK_ERR_NOT_UTF8, "opts->commits_destination",
              "publish_commit: destination override not UTF-8");
    EXPECT_RC(dk_publish_build(c, NULL, NULL, &E), DK_ERR_NULL_ARGUMENT, "build", "publish_build: NULL build");
    EXPECT_RC(dk_publish_build(NULL, &build, NULL, &E), DK_ERR_NULL_ARGUMENT, "client", "publish_build: NULL client");
    build.job = NULL;
    EXPECT_RC(dk_publish_build(c, &build, NULL, &E), DK_ERR_NULL_ARGUMENT, "build->job", "publish_build: NULL job");
    build.job = "site-build";
    build.status = 12;
    EXPECT_RC(dk_publish_build(c, &build, NULL, &E), DK_ERR_INVALID_ARGUMENT, "build->status",
              "publish_build: unknown status");
    EXPECT_RC(dk_publish_event(c, "ci", NULL, NULL, NULL, &E), DK_ERR_NULL_ARGUMENT, "text", "publish_event: NULL text");
    EXPECT_RC(dk_publish_event(NULL, "ci", "hi", NULL, NULL, &E), DK_ERR_NULL_ARGUMENT, "client",
              "publish_event: NULL client");
    EXPECT_RC(dk_publish_event(c, "\xff", "hi", NULL, NULL, &E), DK_ERR_NOT_UTF8, "source",
              "publish_event: source not UTF-8");
}

static void error_objects(void) {
    dk_client *c = NULL;
    dk_error *err = NULL;
    dk_client_connect("http://x", NULL, &c, &err);
    if (!CHECK(err != NULL, "an error object to inspect")) {
        return;
    }
    const char *msg = dk_error_message(err);
    size_t full = strlen(msg), n = 0;
    char small[8];
    CHECK(dk_error_copy_message(err, small, sizeof small, &n) == DK_OK && n == full && strlen(small) == sizeof small - 1 &&
              strncmp(small, msg, sizeof small - 1) == 0,
          "dk_error_copy_message truncates and reports the full length");
    char big[512];
    CHECK(dk_error_copy_message(err, big, sizeof big, &n) == DK_OK && n == full && strcmp(big, msg) == 0,
          "dk_error_copy_message copies the whole message");
    CHECK(dk_error_copy_message(err, NULL, 0, &n) == DK_OK && n == full, "dk_error_copy_message(len 0) only measures");
    CHECK(dk_error_copy_message(err, NULL, 4, &n) == DK_ERR_NULL_ARGUMENT, "dk_error_copy_message: NULL buffer");
    CHECK(dk_error_copy_message(NULL, big, sizeof big, &n) == DK_ERR_NULL_ARGUMENT, "dk_error_copy_message: NULL error");
    dk_error_free(err);
}

int main(int argc, char **argv) {
    const char *url = test_url(argc, argv);
    version_and_codes();
    frees_accept_null();
    bad_urls();
    refused_connection();
    connect_arguments(url);
    error_objects();
    message_arguments();
    bad_credentials(url);

    dk_connect_options o = test_options();
    dk_client *c = NULL;
    if (EXPECT_RC(dk_client_connect(url, &o, &c, &E), DK_OK, NULL, "connect to the test broker")) {
        CHECK(c != NULL, "connect stored a client");
        client_arguments(c);
        subscription_arguments(c);
        publish_arguments(c);
        EXPECT_RC(dk_client_disconnect(c, &E), DK_OK, NULL, "disconnect");
    }
    return tap_done("test_errors");
}
