/* OpenSSL on a pair of memory BIOs: the driver moves ciphertext, this file
 * handshakes; as a client it verifies against the MX name and names the
 * outcome, as a server (submission) it presents the configured certificate. */
#include "smtp/tls.h"

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define HOST_MAX 255
#define CERT_PATH_SHOW 200 /* bytes of a file name in an error */
#define SESSION_SLOTS 64

struct session_slot {
	char host[HOST_MAX + 1];
	SSL_SESSION *sess;   /* owned reference */
	unsigned long stamp; /* for least-recently-stored replacement */
};

struct smtp_tls_ctx {
	SSL_CTX *ssl_ctx;
	struct session_slot slots[SESSION_SLOTS];
	unsigned long clock;
};

struct smtp_tls {
	struct smtp_tls_ctx *ctx;
	SSL *ssl;
	BIO *rbio, *wbio; /* owned by ssl */
	char host[HOST_MAX + 1];
	bool verify;
	bool dane;   /* smtp_tls_set_dane(): never resumed, never cached */
	bool server; /* made by smtp_tls_accept(): no peer certificate to judge */
	bool done, failed;
	long verify_error;
	enum smtp_tls_result result_type;
	char reason[256];
};

static int tls_ex_index = -1;

static const char *const result_names[SMTP_TLS_RESULT_COUNT] = {
	[SMTP_TLS_RESULT_SUCCESS] = "success",
	[SMTP_TLS_RESULT_STARTTLS_NOT_SUPPORTED] = "starttls-not-supported",
	[SMTP_TLS_RESULT_CERTIFICATE_HOST_MISMATCH] = "certificate-host-mismatch",
	[SMTP_TLS_RESULT_CERTIFICATE_EXPIRED] = "certificate-expired",
	[SMTP_TLS_RESULT_CERTIFICATE_NOT_TRUSTED] = "certificate-not-trusted",
	[SMTP_TLS_RESULT_VALIDATION_FAILURE] = "validation-failure",
	[SMTP_TLS_RESULT_STS_POLICY_FETCH_ERROR] = "sts-policy-fetch-error",
	[SMTP_TLS_RESULT_STS_POLICY_INVALID] = "sts-policy-invalid",
	[SMTP_TLS_RESULT_STS_WEBPKI_INVALID] = "sts-webpki-invalid",
	[SMTP_TLS_RESULT_TLSA_INVALID] = "tlsa-invalid",
	[SMTP_TLS_RESULT_DNSSEC_INVALID] = "dnssec-invalid",
	[SMTP_TLS_RESULT_DANE_REQUIRED] = "dane-required",
};

const char *smtp_tls_result_name(enum smtp_tls_result r)
{
	if ((unsigned)r >= SMTP_TLS_RESULT_COUNT)
		return result_names[SMTP_TLS_RESULT_VALIDATION_FAILURE];
	return result_names[r];
}

int smtp_tls_result_parse(const char *name, enum smtp_tls_result *out)
{
	unsigned i;

	for (i = 0; i < SMTP_TLS_RESULT_COUNT; i++)
		if (strcmp(name, result_names[i]) == 0) {
			*out = (enum smtp_tls_result)i;
			return 0;
		}
	return -1;
}

static void set_err(char *err, size_t errlen, const char *what)
{
	unsigned long e = ERR_peek_last_error();
	char buf[200] = "";

	if (e)
		ERR_error_string_n(e, buf, sizeof(buf));
	if (err && errlen)
		snprintf(err, errlen, "%s%s%s", what, buf[0] ? ": " : "", buf);
	ERR_clear_error();
}

static struct session_slot *find_slot(struct smtp_tls_ctx *ctx, const char *host)
{
	size_t i;

	for (i = 0; i < SESSION_SLOTS; i++)
		if (ctx->slots[i].sess && strcasecmp(ctx->slots[i].host, host) == 0)
			return &ctx->slots[i];
	return NULL;
}

/* OpenSSL hands us each new session (TLS 1.3: each ticket). Returning 1
 * keeps the reference. Only verified sessions are kept: a resumed session
 * inherits the verify result without a new check. */
static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
	struct smtp_tls *t = SSL_get_ex_data(ssl, tls_ex_index);
	struct session_slot *slot;
	size_t i;

	if (!t || t->dane || SSL_get_verify_result(ssl) != X509_V_OK ||
	    SSL_get0_peer_certificate(ssl) == NULL)
		return 0;
	slot = find_slot(t->ctx, t->host);
	if (!slot) {
		slot = &t->ctx->slots[0];
		for (i = 0; i < SESSION_SLOTS; i++) {
			if (!t->ctx->slots[i].sess) {
				slot = &t->ctx->slots[i];
				break;
			}
			if (t->ctx->slots[i].stamp < slot->stamp)
				slot = &t->ctx->slots[i];
		}
	}
	if (slot->sess)
		SSL_SESSION_free(slot->sess);
	snprintf(slot->host, sizeof(slot->host), "%s", t->host);
	slot->sess = sess;
	slot->stamp = ++t->ctx->clock;
	return 1;
}

struct smtp_tls_ctx *smtp_tls_ctx_new(const char *ca_file, char *err, size_t errlen)
{
	struct smtp_tls_ctx *ctx = calloc(1, sizeof(*ctx));

	if (!ctx) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (tls_ex_index < 0)
		tls_ex_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	ctx->ssl_ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx->ssl_ctx || tls_ex_index < 0) {
		set_err(err, errlen, "SSL_CTX_new");
		goto fail;
	}
	if (SSL_CTX_set_min_proto_version(ctx->ssl_ctx, TLS1_2_VERSION) != 1) {
		set_err(err, errlen, "cannot require TLS 1.2");
		goto fail;
	}
	/* Idle sessions hold no buffers. No SSL_MODE_ENABLE_PARTIAL_WRITE: with
	 * it SSL_write_ex() stops after one record (16 KiB), and a caller that
	 * took "success" for "all of it" lost the rest of the message. */
	SSL_CTX_set_mode(ctx->ssl_ctx, SSL_MODE_RELEASE_BUFFERS);
	if (ca_file && ca_file[0]) {
		if (SSL_CTX_load_verify_locations(ctx->ssl_ctx, ca_file, NULL) != 1) {
			char what[300];

			snprintf(what, sizeof(what), "cannot load ca_file %s", ca_file);
			set_err(err, errlen, what);
			goto fail;
		}
	} else if (SSL_CTX_set_default_verify_paths(ctx->ssl_ctx) != 1) {
		set_err(err, errlen, "cannot load the system CA store");
		goto fail;
	}
	/* DANE's digests (SHA2-256 and SHA2-512) for smtp_tls_set_dane(). */
	if (SSL_CTX_dane_enable(ctx->ssl_ctx) <= 0) {
		set_err(err, errlen, "cannot enable DANE");
		goto fail;
	}
	SSL_CTX_set_session_cache_mode(ctx->ssl_ctx,
				       SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(ctx->ssl_ctx, new_session_cb);
	return ctx;
fail:
	smtp_tls_ctx_free(ctx);
	return NULL;
}

void smtp_tls_ctx_free(struct smtp_tls_ctx *ctx)
{
	size_t i;

	if (!ctx)
		return;
	for (i = 0; i < SESSION_SLOTS; i++)
		if (ctx->slots[i].sess)
			SSL_SESSION_free(ctx->slots[i].sess);
	SSL_CTX_free(ctx->ssl_ctx);
	free(ctx);
}

enum smtp_tls_result smtp_tls_result_type_for(long e)
{
	switch (e) {
	case X509_V_OK:
		return SMTP_TLS_RESULT_SUCCESS;
	case X509_V_ERR_HOSTNAME_MISMATCH:
		return SMTP_TLS_RESULT_CERTIFICATE_HOST_MISMATCH;
	case X509_V_ERR_CERT_HAS_EXPIRED:
	case X509_V_ERR_CERT_NOT_YET_VALID:
		return SMTP_TLS_RESULT_CERTIFICATE_EXPIRED;
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
	case X509_V_ERR_CERT_UNTRUSTED:
	case X509_V_ERR_CERT_REJECTED:
		return SMTP_TLS_RESULT_CERTIFICATE_NOT_TRUSTED;
	case X509_V_ERR_DANE_NO_MATCH:
		return SMTP_TLS_RESULT_TLSA_INVALID;
	default:
		return SMTP_TLS_RESULT_VALIDATION_FAILURE;
	}
}

/* The SSL object of t on two memory BIOs (the socket is the caller's): the
 * one set-up of client and server sessions. On failure the caller frees t. */
static int tls_attach(struct smtp_tls *t, SSL_CTX *sctx, char *err, size_t errlen)
{
	ERR_clear_error();
	t->ssl = SSL_new(sctx);
	if (!t->ssl) {
		set_err(err, errlen, "SSL_new");
		return -1;
	}
	t->rbio = BIO_new(BIO_s_mem());
	t->wbio = BIO_new(BIO_s_mem());
	if (!t->rbio || !t->wbio) {
		BIO_free(t->rbio);
		BIO_free(t->wbio);
		t->rbio = t->wbio = NULL;
		set_err(err, errlen, "BIO_new");
		return -1;
	}
	/* An empty memory BIO reads as "retry", not EOF. */
	BIO_set_mem_eof_return(t->rbio, -1);
	SSL_set_bio(t->ssl, t->rbio, t->wbio);
	return 0;
}

struct smtp_tls *smtp_tls_new(struct smtp_tls_ctx *ctx, const char *host, bool verify, char *err,
			      size_t errlen)
{
	struct smtp_tls *t = NULL;
	struct session_slot *slot;
	X509_VERIFY_PARAM *vp;
	unsigned char ipbuf[16];
	bool is_ip;
	size_t n = host ? strlen(host) : 0;

	if (n > 0 && host[n - 1] == '.')
		n--;
	if (n == 0 || n > HOST_MAX) {
		snprintf(err, errlen, "bad MX host name");
		return NULL;
	}
	t = calloc(1, sizeof(*t));
	if (!t) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	memcpy(t->host, host, n);
	t->host[n] = '\0';
	t->ctx = ctx;
	t->verify = verify;
	t->verify_error = X509_V_OK;
	if (tls_attach(t, ctx->ssl_ctx, err, errlen) != 0)
		goto fail;
	SSL_set_connect_state(t->ssl);
	/* An MX named by its address (an address literal recipient): no SNI,
	 * which RFC 6066 §3 forbids for addresses, and the certificate is
	 * checked against the address (an IP subjectAltName). */
	is_ip = inet_pton(AF_INET, t->host, ipbuf) == 1 || inet_pton(AF_INET6, t->host, ipbuf) == 1;
	if (SSL_set_ex_data(t->ssl, tls_ex_index, t) != 1 ||
	    (!is_ip && SSL_set_tlsext_host_name(t->ssl, t->host) != 1)) {
		set_err(err, errlen, "cannot set SNI");
		goto fail;
	}
	vp = SSL_get0_param(t->ssl);
	/* RFC 8461 §4.2: the name must be a SAN DNS-ID. OpenSSL would fall back
	 * to the subject CN of a certificate without DNS SANs; never do that
	 * (RFC 6125 §6.4.4 leaves it to the application; MTA-STS forbids it). */
	X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS |
						    X509_CHECK_FLAG_NEVER_CHECK_SUBJECT);
	if ((is_ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, t->host)
		   : X509_VERIFY_PARAM_set1_host(vp, t->host, 0)) != 1) {
		set_err(err, errlen, "cannot set the host name to check");
		goto fail;
	}
	SSL_set_verify(t->ssl, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
	slot = find_slot(ctx, t->host);
	if (slot && SSL_SESSION_is_resumable(slot->sess))
		SSL_set_session(t->ssl, slot->sess); /* failure only means a full handshake */
	return t;
fail:
	smtp_tls_free(t);
	return NULL;
}

int smtp_tls_set_dane(struct smtp_tls *t, const struct smtp_tlsa_set *set, const char *base,
		      char *err, size_t errlen)
{
	size_t i, added = 0;

	if (t->done || t->failed) {
		snprintf(err, errlen, "DANE after the handshake began");
		return -1;
	}
	ERR_clear_error();
	/* The base domain becomes the first reference identifier; the MX
	 * host (smtp_tls_new's name, the SNI) the second. */
	if (SSL_dane_enable(t->ssl, base != NULL && base[0] ? base : t->host) <= 0 ||
	    (base != NULL && base[0] && strcasecmp(base, t->host) != 0 &&
	     SSL_add1_host(t->ssl, t->host) != 1)) {
		set_err(err, errlen, "cannot enable DANE for the connection");
		return -1;
	}
	/* RFC 7672 §8.1: the client MUST name the TLSA base domain in SNI. */
	if (base != NULL && base[0] && strcasecmp(base, t->host) != 0 &&
	    SSL_set_tlsext_host_name(t->ssl, base) != 1) {
		set_err(err, errlen, "cannot set SNI to the TLSA base domain");
		return -1;
	}
	/* RFC 7672 §3.1.1: a DANE-EE match needs no name (nor date) check. */
	SSL_dane_set_flags(t->ssl, DANE_FLAG_NO_DANE_EE_NAMECHECKS);
	for (i = 0; i < set->n; i++) {
		const struct smtp_tlsa *r = &set->rec[i];
		int rc;

		if (!smtp_tlsa_usable(r))
			continue;
		rc = SSL_dane_tlsa_add(t->ssl, r->usage, r->selector, r->mtype, r->data, r->len);
		if (rc < 0) {
			set_err(err, errlen, "cannot add a TLSA record");
			return -1;
		}
		added += rc > 0;
	}
	ERR_clear_error();
	if (added == 0) {
		snprintf(err, errlen, "no usable TLSA record");
		return -1;
	}
	SSL_set_session(t->ssl, NULL); /* drop a session smtp_tls_new offered */
	t->dane = true;
	return 0;
}

bool smtp_tls_dane(const struct smtp_tls *t)
{
	return t->dane;
}

int smtp_tls_dane_match(const struct smtp_tls *t, char *buf, size_t len)
{
	uint8_t usage, selector, mtype;
	unsigned const char *data = NULL;
	size_t dlen = 0;
	struct smtp_tlsa rec;
	int depth;

	if (len > 0)
		buf[0] = '\0';
	if (!t->dane || !t->done)
		return -1;
	depth = SSL_get0_dane_tlsa(t->ssl, &usage, &selector, &mtype, &data, &dlen);
	if (depth < 0 || data == NULL)
		return -1;
	rec.usage = usage;
	rec.selector = selector;
	rec.mtype = mtype;
	rec.len = dlen > SMTP_TLSA_DATA_MAX ? SMTP_TLSA_DATA_MAX : dlen;
	memcpy(rec.data, data, rec.len);
	if (smtp_tlsa_format(&rec, buf, len) < 0 && len > 0)
		snprintf(buf, len, "%u %u %u", usage, selector, mtype);
	return depth;
}

void smtp_tls_free(struct smtp_tls *t)
{
	if (!t)
		return;
	SSL_free(t->ssl); /* frees both BIOs */
	free(t);
}

/* Fills result_type/reason from the verify result (also on success). After
 * a failed handshake OpenSSL keeps no peer certificate, but the verify
 * result of the chain it rejected is still there. */
static void record_verify(struct smtp_tls *t, bool handshake_ok)
{
	if (t->server) {
		/* clients present no certificate: a failure is the handshake's */
		t->verify_error = X509_V_OK;
		t->result_type = SMTP_TLS_RESULT_SUCCESS;
		t->reason[0] = '\0';
		return;
	}
	t->verify_error = SSL_get_verify_result(t->ssl);
	if (handshake_ok && t->verify_error == X509_V_OK &&
	    SSL_get0_peer_certificate(t->ssl) == NULL)
		t->verify_error = X509_V_ERR_UNSPECIFIED; /* no certificate at all */
	t->result_type = smtp_tls_result_type_for(t->verify_error);
	if (t->result_type != SMTP_TLS_RESULT_SUCCESS)
		snprintf(t->reason, sizeof(t->reason), "%s",
			 X509_verify_cert_error_string(t->verify_error));
	else
		t->reason[0] = '\0';
}

int smtp_tls_handshake(struct smtp_tls *t)
{
	int rc, e;

	if (t->done)
		return SMTP_TLS_DONE;
	if (t->failed)
		return SMTP_TLS_ERROR;
	ERR_clear_error();
	rc = SSL_do_handshake(t->ssl);
	if (rc == 1) {
		t->done = true;
		record_verify(t, true);
		return SMTP_TLS_DONE;
	}
	e = SSL_get_error(t->ssl, rc);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
		return SMTP_TLS_AGAIN;
	t->failed = true;
	record_verify(t, false);
	if (t->result_type == SMTP_TLS_RESULT_SUCCESS) {
		/* Not a certificate verdict: protocol version, alert, garbage. */
		unsigned long ee = ERR_peek_last_error();
		char buf[200] = "unexpected end of handshake";

		if (ee)
			ERR_error_string_n(ee, buf, sizeof(buf));
		t->result_type = SMTP_TLS_RESULT_VALIDATION_FAILURE;
		snprintf(t->reason, sizeof(t->reason), "%s", buf);
	}
	ERR_clear_error();
	return SMTP_TLS_ERROR;
}

int smtp_tls_feed(struct smtp_tls *t, const void *buf, size_t len)
{
	while (len > 0) {
		int chunk = len > 1 << 30 ? 1 << 30 : (int)len;
		int n = BIO_write(t->rbio, buf, chunk);

		if (n <= 0)
			return -1;
		buf = (const char *)buf + n;
		len -= (size_t)n;
	}
	return 0;
}

size_t smtp_tls_pending(const struct smtp_tls *t)
{
	return BIO_ctrl_pending(t->wbio);
}

size_t smtp_tls_take(struct smtp_tls *t, void *buf, size_t cap)
{
	int n;

	if (cap == 0)
		return 0;
	n = BIO_read(t->wbio, buf, cap > 1 << 30 ? 1 << 30 : (int)cap);
	return n > 0 ? (size_t)n : 0;
}

ssize_t smtp_tls_write(struct smtp_tls *t, const void *buf, size_t len)
{
	size_t done = 0;

	if (!t->done)
		return -1;
	/* Without partial writes and with a memory BIO that never refuses,
	 * one SSL_write_ex() takes everything; the loop only guards the count
	 * so that what is returned is what really became ciphertext. */
	while (done < len) {
		size_t written = 0;

		ERR_clear_error();
		if (SSL_write_ex(t->ssl, (const char *)buf + done, len - done, &written) != 1 ||
		    written == 0) {
			ERR_clear_error();
			return -1;
		}
		done += written;
	}
	return (ssize_t)done;
}

ssize_t smtp_tls_read(struct smtp_tls *t, void *buf, size_t cap)
{
	size_t got = 0;
	int e;

	if (!t->done)
		return SMTP_TLS_ERROR;
	ERR_clear_error();
	if (SSL_read_ex(t->ssl, buf, cap, &got) == 1)
		return (ssize_t)got;
	e = SSL_get_error(t->ssl, 0);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
		return 0;
	if (e == SSL_ERROR_ZERO_RETURN)
		return SMTP_TLS_EOF;
	return SMTP_TLS_ERROR;
}

void smtp_tls_shutdown(struct smtp_tls *t)
{
	if (t->done) {
		ERR_clear_error();
		SSL_shutdown(t->ssl);
		ERR_clear_error();
	}
}

const char *smtp_tls_version(const struct smtp_tls *t)
{
	return t->done ? SSL_get_version(t->ssl) : NULL;
}

const char *smtp_tls_cipher(const struct smtp_tls *t)
{
	return t->done ? SSL_get_cipher_name(t->ssl) : NULL;
}

bool smtp_tls_verified(const struct smtp_tls *t)
{
	return t->done && t->result_type == SMTP_TLS_RESULT_SUCCESS;
}

bool smtp_tls_resumed(const struct smtp_tls *t)
{
	return t->done && SSL_session_reused(t->ssl) == 1;
}

enum smtp_tls_result smtp_tls_result_type(const struct smtp_tls *t)
{
	return t->result_type;
}

const char *smtp_tls_reason(const struct smtp_tls *t)
{
	return t->reason;
}

long smtp_tls_verify_error(const struct smtp_tls *t)
{
	return t->verify_error;
}

/* ---- server side ---- */

struct smtp_tls_server_ctx {
	SSL_CTX *ssl_ctx;
	char describe[300];
};

/* "CN=..., not after YYYY-MM-DD" of the leaf, for the log lines that say
 * which certificate is in use. */
static void describe_cert(struct smtp_tls_server_ctx *ctx)
{
	X509 *leaf = SSL_CTX_get0_certificate(ctx->ssl_ctx);
	char cn[256] = "?";
	struct tm tm;

	if (leaf == NULL)
		return;
	if (X509_NAME_get_text_by_NID(X509_get_subject_name(leaf), NID_commonName, cn, sizeof(cn)) <
	    0)
		snprintf(cn, sizeof(cn), "(no CN)");
	if (ASN1_TIME_to_tm(X509_get0_notAfter(leaf), &tm) == 1)
		snprintf(ctx->describe, sizeof(ctx->describe), "CN=%s, not after %04d-%02d-%02d",
			 cn, tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
	else
		snprintf(ctx->describe, sizeof(ctx->describe), "CN=%s", cn);
}

struct smtp_tls_server_ctx *smtp_tls_server_ctx_new(const char *cert_file, const char *key_file,
						    char *err, size_t errlen)
{
	struct smtp_tls_server_ctx *ctx = calloc(1, sizeof(*ctx));
	char what[CERT_PATH_SHOW + 64];
	static const unsigned char sid_ctx[] = "stsrelay-submission";

	if (!ctx) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	ERR_clear_error();
	ctx->ssl_ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx->ssl_ctx) {
		set_err(err, errlen, "SSL_CTX_new");
		goto fail;
	}
	if (SSL_CTX_set_min_proto_version(ctx->ssl_ctx, TLS1_2_VERSION) != 1) {
		set_err(err, errlen, "cannot require TLS 1.2");
		goto fail;
	}
	/* Client-initiated renegotiation costs the server a handshake per
	 * request for nothing; the server picks the cipher. */
	SSL_CTX_set_options(ctx->ssl_ctx,
			    SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_mode(ctx->ssl_ctx, SSL_MODE_RELEASE_BUFFERS);
	if (SSL_CTX_set_session_id_context(ctx->ssl_ctx, sid_ctx, sizeof(sid_ctx) - 1) != 1) {
		set_err(err, errlen, "cannot set the session id context");
		goto fail;
	}
	if (SSL_CTX_use_certificate_chain_file(ctx->ssl_ctx, cert_file) != 1) {
		snprintf(what, sizeof(what), "cannot load tls_cert_file %.*s", CERT_PATH_SHOW,
			 cert_file);
		set_err(err, errlen, what);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx->ssl_ctx, key_file, SSL_FILETYPE_PEM) != 1) {
		/* OpenSSL checks the pair already here; say it in the operator's words */
		bool mismatch = ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH;

		snprintf(what, sizeof(what),
			 mismatch ? "tls_key_file %.*s does not match tls_cert_file"
				  : "cannot load tls_key_file %.*s",
			 CERT_PATH_SHOW, key_file);
		set_err(err, errlen, what);
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx->ssl_ctx) != 1) {
		snprintf(what, sizeof(what), "tls_key_file %.*s does not match tls_cert_file",
			 CERT_PATH_SHOW, key_file);
		set_err(err, errlen, what);
		goto fail;
	}
	describe_cert(ctx);
	return ctx;
fail:
	smtp_tls_server_ctx_free(ctx);
	return NULL;
}

void smtp_tls_server_ctx_free(struct smtp_tls_server_ctx *ctx)
{
	if (!ctx)
		return;
	SSL_CTX_free(ctx->ssl_ctx); /* connections made from it keep their reference */
	free(ctx);
}

const char *smtp_tls_server_ctx_describe(const struct smtp_tls_server_ctx *ctx)
{
	return ctx->describe;
}

struct smtp_tls *smtp_tls_accept(struct smtp_tls_server_ctx *ctx, char *err, size_t errlen)
{
	struct smtp_tls *t = calloc(1, sizeof(*t));

	if (!t) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	t->server = true;
	t->verify_error = X509_V_OK;
	if (tls_attach(t, ctx->ssl_ctx, err, errlen) != 0)
		goto fail;
	SSL_set_accept_state(t->ssl);
	return t;
fail:
	smtp_tls_free(t);
	return NULL;
}
