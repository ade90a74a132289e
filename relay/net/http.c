/* libcurl multi socket API on libuv (the pattern of curl's multi-uv
 * example): curl says which sockets and timeout it wants, uv_poll and one
 * uv_timer tell it when they are ready. */
#include "relay/net/http.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/core/buf.h"

#define HTTP_URL_MAX 2048

struct http_client {
	uv_loop_t *loop;
	CURLM *multi;
	uv_timer_t timer;
	struct http_req *reqs; /* in flight, for cancellation */
	bool closing;
};

struct http_req {
	struct http_client *hc;
	CURL *easy;
	struct curl_slist *resolve;
	struct curl_slist *headers;
	struct core_buf body; /* capped at the request's max_body */
	http_cb cb;
	void *arg;
	char errbuf[CURL_ERROR_SIZE];
	struct http_req *next, **prevp;
};

struct http_sock { /* one per socket curl watches */
	uv_poll_t poll;
	struct http_client *hc;
	curl_socket_t fd;
};

static int curl_ready;

static void check_done(struct http_client *hc);

static void sock_closed(uv_handle_t *h)
{
	free(h->data);
}

static void poll_cb(uv_poll_t *p, int status, int events)
{
	struct http_sock *s = p->data;
	int flags = 0, running;

	if (status < 0)
		flags = CURL_CSELECT_ERR;
	if (events & UV_READABLE)
		flags |= CURL_CSELECT_IN;
	if (events & UV_WRITABLE)
		flags |= CURL_CSELECT_OUT;
	curl_multi_socket_action(s->hc->multi, s->fd, flags, &running);
	check_done(s->hc);
}

static void timer_cb(uv_timer_t *t)
{
	struct http_client *hc = t->data;
	int running;

	curl_multi_socket_action(hc->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_done(hc);
}

static int socket_fn(CURL *easy, curl_socket_t fd, int what, void *userp, void *sockp)
{
	struct http_client *hc = userp;
	struct http_sock *s = sockp;
	int events = 0;

	(void)easy;
	if (what == CURL_POLL_REMOVE) {
		if (s != NULL) {
			uv_poll_stop(&s->poll);
			uv_close((uv_handle_t *)&s->poll, sock_closed);
			curl_multi_assign(hc->multi, fd, NULL);
		}
		return 0;
	}
	if (s == NULL) {
		s = calloc(1, sizeof(*s));
		if (s == NULL)
			return -1;
		s->hc = hc;
		s->fd = fd;
		if (uv_poll_init_socket(hc->loop, &s->poll, fd) != 0) {
			free(s);
			return -1;
		}
		s->poll.data = s;
		curl_multi_assign(hc->multi, fd, s);
	}
	if (what & CURL_POLL_IN)
		events |= UV_READABLE;
	if (what & CURL_POLL_OUT)
		events |= UV_WRITABLE;
	return uv_poll_start(&s->poll, events, poll_cb) == 0 ? 0 : -1;
}

static int timer_fn(CURLM *multi, long timeout_ms, void *userp)
{
	struct http_client *hc = userp;

	(void)multi;
	if (timeout_ms < 0)
		uv_timer_stop(&hc->timer);
	else
		uv_timer_start(&hc->timer, timer_cb, (uint64_t)timeout_ms, 0);
	return 0;
}

static size_t write_fn(char *data, size_t size, size_t nmemb, void *userp)
{
	struct http_req *r = userp;
	size_t n = size * nmemb;

	/* Returning less than n aborts the transfer with CURLE_WRITE_ERROR;
	 * finish() tells "too big" (-E2BIG) from "out of memory". */
	return core_buf_add(&r->body, data, n) == 0 ? n : 0;
}

static void req_free(struct http_req *r)
{
	if (r->prevp != NULL) {
		*r->prevp = r->next;
		if (r->next)
			r->next->prevp = r->prevp;
	}
	if (r->easy != NULL) {
		curl_multi_remove_handle(r->hc->multi, r->easy);
		curl_easy_cleanup(r->easy);
	}
	curl_slist_free_all(r->resolve);
	curl_slist_free_all(r->headers);
	core_buf_free(&r->body);
	free(r);
}

static void finish(struct http_req *r, CURLcode rc)
{
	struct http_result res;
	char *ct = NULL;

	memset(&res, 0, sizeof(res));
	curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &res.code);
	curl_easy_getinfo(r->easy, CURLINFO_CONTENT_TYPE, &ct);
	res.content_type = ct;
	res.body = core_buf_str(&r->body);
	res.body_len = core_buf_len(&r->body);
	res.error = r->errbuf[0] ? r->errbuf : curl_easy_strerror(rc);
	if (core_buf_error(&r->body) == -E2BIG || rc == CURLE_FILESIZE_EXCEEDED) {
		res.status = HTTP_TOO_BIG;
		res.error = "response body too large";
	} else if (rc == CURLE_OK) {
		res.status = HTTP_DONE;
		res.error = NULL;
	} else if (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE ||
		   rc == CURLE_SSL_ISSUER_ERROR || rc == CURLE_SSL_PINNEDPUBKEYNOTMATCH) {
		res.status = HTTP_TLS_ERROR;
	} else if (rc == CURLE_OPERATION_TIMEDOUT) {
		res.status = HTTP_TIMEOUT;
	} else {
		res.status = HTTP_FAILED;
	}
	r->cb(r->arg, &res);
	req_free(r);
}

static void check_done(struct http_client *hc)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(hc->multi, &left)) != NULL) {
		struct http_req *r = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
		if (r != NULL)
			finish(r, msg->data.result);
	}
}

int http_client_new(uv_loop_t *loop, struct http_client **out)
{
	struct http_client *hc;

	if (!curl_ready) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
			return -1;
		curl_ready = 1;
	}
	hc = calloc(1, sizeof(*hc));
	if (hc == NULL)
		return -1;
	hc->loop = loop;
	hc->multi = curl_multi_init();
	if (hc->multi == NULL || uv_timer_init(loop, &hc->timer) != 0) {
		if (hc->multi)
			curl_multi_cleanup(hc->multi);
		free(hc);
		return -1;
	}
	hc->timer.data = hc;
	curl_multi_setopt(hc->multi, CURLMOPT_SOCKETFUNCTION, socket_fn);
	curl_multi_setopt(hc->multi, CURLMOPT_SOCKETDATA, hc);
	curl_multi_setopt(hc->multi, CURLMOPT_TIMERFUNCTION, timer_fn);
	curl_multi_setopt(hc->multi, CURLMOPT_TIMERDATA, hc);
	*out = hc;
	return 0;
}

static void client_closed(uv_handle_t *h)
{
	free(h->data);
}

void http_client_free(struct http_client *hc)
{
	if (hc == NULL)
		return;
	hc->closing = true;
	while (hc->reqs != NULL) {
		struct http_req *r = hc->reqs;
		struct http_result res = { .status = HTTP_CANCELLED,
					   .body = "",
					   .error = "cancelled" };
		r->cb(r->arg, &res);
		req_free(r); /* removes the handle: curl reports CURL_POLL_REMOVE */
	}
	curl_multi_cleanup(hc->multi);
	uv_timer_stop(&hc->timer);
	uv_close((uv_handle_t *)&hc->timer, client_closed);
}

/* "host:port:addr1,addr2" for CURLOPT_RESOLVE; IPv6 addresses in brackets. */
static int build_resolve(struct http_req *r, const char *url, const struct http_request *req)
{
	char host[256], entry[1024];
	const char *p, *e;
	long port = 443;
	size_t i, len;
	int n;

	if (strncmp(url, "https://", 8) != 0)
		return -1;
	p = url + 8;
	e = p + strcspn(p, ":/?#");
	len = (size_t)(e - p);
	if (len == 0 || len >= sizeof(host) || memchr(p, '@', len) != NULL || *p == '[')
		return -1;
	memcpy(host, p, len);
	host[len] = '\0';
	if (*e == ':') {
		char *end;
		port = strtol(e + 1, &end, 10);
		if (port <= 0 || port > 65535 || (*end != '\0' && *end != '/' && *end != '?'))
			return -1;
	}
	n = snprintf(entry, sizeof(entry), "%s:%ld:", host, port);
	for (i = 0; i < req->naddrs && n > 0 && (size_t)n < sizeof(entry); i++) {
		bool v6 = strchr(req->addrs[i], ':') != NULL;
		n += snprintf(entry + n, sizeof(entry) - (size_t)n, "%s%s%s%s", i ? "," : "",
			      v6 ? "[" : "", req->addrs[i], v6 ? "]" : "");
	}
	if (n <= 0 || (size_t)n >= sizeof(entry) || req->naddrs == 0)
		return -1;
	r->resolve = curl_slist_append(NULL, entry);
	return r->resolve ? 0 : -1;
}

int http_request_start(struct http_client *hc, const struct http_request *req, http_cb cb,
		       void *arg)
{
	struct http_req *r;
	CURL *e;

	if (hc->closing || req->url == NULL || strlen(req->url) >= HTTP_URL_MAX ||
	    req->max_body == 0)
		return -1;
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return -1;
	r->hc = hc;
	r->cb = cb;
	r->arg = arg;
	core_buf_init(&r->body, req->max_body);
	if (build_resolve(r, req->url, req) != 0)
		goto fail;
	e = r->easy = curl_easy_init();
	if (e == NULL)
		goto fail;
	curl_easy_setopt(e, CURLOPT_URL, req->url);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https");
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_RESOLVE, r->resolve);
	curl_easy_setopt(e, CURLOPT_PROXY, "");
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(e, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
	if (req->ca_file != NULL && req->ca_file[0] != '\0')
		curl_easy_setopt(e, CURLOPT_CAINFO, req->ca_file);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)req->timeout_ms);
	curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)req->max_body);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_fn);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
	curl_easy_setopt(e, CURLOPT_PRIVATE, r);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "stsrelay");
	if (req->post_body != NULL) {
		char ct[256];
		snprintf(ct, sizeof(ct), "Content-Type: %s",
			 req->content_type ? req->content_type : "application/octet-stream");
		r->headers = curl_slist_append(NULL, ct);
		if (r->headers == NULL)
			goto fail;
		curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->post_len);
		curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, req->post_body);
	}
	if (curl_multi_add_handle(hc->multi, e) != CURLM_OK)
		goto fail;
	r->next = hc->reqs;
	if (r->next)
		r->next->prevp = &r->next;
	hc->reqs = r;
	r->prevp = &hc->reqs;
	return 0;
fail:
	req_free(r);
	return -1;
}

const char *http_status_name(enum http_status st)
{
	static const char *names[] = { "done",    "tls-error", "timeout",
				       "too-big", "failed",    "cancelled" };
	return (unsigned)st < sizeof(names) / sizeof(names[0]) ? names[st] : "unknown";
}
