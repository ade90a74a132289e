/* HTTPS requests for policy fetches and TLS-RPT uploads: libcurl's multi
 * socket API driven by the libuv loop, so no request ever blocks the loop. */
#ifndef STSRELAY_STS_HTTP_H
#define STSRELAY_STS_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct http_client;

enum http_status {
	HTTP_DONE,      /* a response arrived (any HTTP code: check res->code) */
	HTTP_TLS_ERROR, /* certificate not valid for the host under WebPKI */
	HTTP_TIMEOUT,   /* the whole request took longer than timeout_ms */
	HTTP_TOO_BIG,   /* body larger than max_body: aborted */
	HTTP_FAILED,    /* connection refused, reset, protocol error, ... */
	HTTP_CANCELLED  /* the client was freed first */
};

struct http_request {
	const char *url; /* https only; redirects are never followed */
	/* Addresses to use for the URL's host (resolved by the relay's own DNS,
	 * so every lookup honours dns_servers); numeric strings. Required. */
	const char *const *addrs;
	size_t naddrs;
	const char *ca_file; /* NULL or "": system store */
	uint64_t timeout_ms;
	size_t max_body;       /* response bodies larger than this abort */
	const void *post_body; /* NULL: GET; else POST with this body */
	size_t post_len;
	const char *content_type; /* for POST */
};

struct http_result {
	enum http_status status;
	long code;                /* HTTP status code, 0 if none */
	const char *content_type; /* as sent, or NULL */
	const char *body;         /* NUL-terminated for convenience */
	size_t body_len;
	const char *error; /* human-readable reason when not DONE */
};

/* Called once per request, on the loop. res and its strings live only
 * during the call. */
typedef void (*http_cb)(void *arg, const struct http_result *res);

int http_client_new(uv_loop_t *loop, struct http_client **out);
/* Cancels requests in flight (their callbacks run with HTTP_CANCELLED) and
 * closes every handle; the loop can then end. */
void http_client_free(struct http_client *hc);

/* Starts a request; 0, or -1 if it could not even start (cb not called). */
int http_request_start(struct http_client *hc, const struct http_request *req, http_cb cb,
		       void *arg);

const char *http_status_name(enum http_status st);

#endif
