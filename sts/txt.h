/* DNS TXT discovery records: `_mta-sts.DOMAIN` (RFC 8461 §3.1) and
 * `_smtp._tls.DOMAIN` (RFC 8460 §3). The TXT RRset in, the selected record out. */
#ifndef STSRELAY_STS_TXT_H
#define STSRELAY_STS_TXT_H

#include <stddef.h>

/* One DNS character-string (<= 255 bytes on the wire; not NUL-terminated). */
struct sts_txt_string {
	const unsigned char *data;
	size_t len;
};

/* One TXT record = its character-strings, which are concatenated without a
 * separator (RFC 8461 §3.1, RFC 8460 §3, RFC 7208 §3.3). With c-ares'
 * ares_txt_ext list, a new record begins at each node with record_start. */
struct sts_txt_record {
	const struct sts_txt_string *strings;
	size_t nstrings;
};

/* Ownership: the parsers only read the caller's records during the call and
 * copy everything they return into the output struct (no pointers into the
 * input are kept); nothing is allocated. */

enum sts_txt_result {
	STS_TXT_FOUND = 0, /* exactly one versioned record, valid */
	STS_TXT_NONE,      /* no record starting with the version tag */
	STS_TXT_MULTIPLE,  /* more than one such record: ignore them all */
	STS_TXT_INVALID,   /* one such record, syntactically invalid */
};

/* "found", "none", "multiple", "invalid" (for logs and `sts check`). */
const char *sts_txt_result_name(enum sts_txt_result r);

/* ---- _mta-sts (RFC 8461 §3.1) ---- */

#define STS_TXT_ID_MAX 32

struct sts_txt {
	enum sts_txt_result result;
	char id[STS_TXT_ID_MAX + 1]; /* NUL-terminated; "" unless FOUND */
	size_t record_index;         /* chosen record if FOUND or INVALID */
	const char *reason;          /* static text; NULL if FOUND */
};

/* Selects and parses the `_mta-sts` record from a TXT RRset. Records that do
 * not begin with "v=STSv1" followed by ";", WSP or their end are other TXT
 * data and are skipped (case-sensitive: "V=STSv1", "v=STSv12", " v=STSv1"
 * are skipped). If more than one remains -> MULTIPLE; if one remains it must
 * match the ABNF sts-text-record exactly:
 *   v=STSv1 1*(*WSP ";" *WSP field) [*WSP ";" *WSP]
 *   field = "id=" 1*32(ALPHA/DIGIT) / ext-name "=" ext-value
 *   ext-name = (ALPHA/DIGIT) *31(ALPHA/DIGIT/"_"/"-"/".")
 *   ext-value = 1*(%x21-3A / %x3C / %x3E-7E)
 * with an id field required; the first "id" field wins (RFC 8461 §3.2: a
 * repeated field other than mx keeps its first value), and it must be 1-32
 * alphanumerics. Returns out->result. MULTIPLE, INVALID and NONE all mean
 * "no new policy": a cached policy keeps applying (RFC 8461 §5.1). */
enum sts_txt_result sts_txt_parse(const struct sts_txt_record *records, size_t nrecords,
				  struct sts_txt *out);

/* Same, for one record already joined into bytes (tests, `sts check`). */
enum sts_txt_result sts_txt_parse_one(const void *record, size_t len, struct sts_txt *out);

/* ---- _smtp._tls (RFC 8460 §3) ---- */

#define STS_TLSRPT_MAX_RUA 8
#define STS_TLSRPT_URI_MAX 512

enum sts_tlsrpt_rua_kind {
	STS_TLSRPT_MAILTO,
	STS_TLSRPT_HTTPS,
};

struct sts_tlsrpt_rua {
	enum sts_tlsrpt_rua_kind kind;
	/* mailto: the percent-decoded addr-spec ("tlsrpt@example.com"),
	 * query (?subject=...) dropped; https: the URI exactly as published. */
	char target[STS_TLSRPT_URI_MAX + 1];
};

struct sts_tlsrpt_txt {
	enum sts_txt_result result;
	size_t nrua; /* usable URIs in rua[], in record order */
	struct sts_tlsrpt_rua rua[STS_TLSRPT_MAX_RUA];
	size_t ignored; /* URIs skipped: other scheme, bad
					 * address, too long, beyond the limit */
	size_t record_index;
	const char *reason; /* static text; NULL if FOUND */
};

/* Selects and parses the TLS-RPT policy record, same selection rules with
 * the tag "v=TLSRPTv1". ABNF (RFC 8460 §3):
 *   v=TLSRPTv1 1*(*WSP ";" *WSP field) [*WSP ";" *WSP]
 *   field = "rua=" uri *(*WSP "," *WSP uri) / ext-name "=" ext-value
 * rua is required (the first rua field wins); a URI is 1*(%x21-7E except
 * ";" and ","). FOUND may come with nrua == 0 when every URI was ignored
 * (e.g. only http: or unsupported schemes): nothing can be sent then. */
enum sts_txt_result sts_tlsrpt_txt_parse(const struct sts_txt_record *records, size_t nrecords,
					 struct sts_tlsrpt_txt *out);

enum sts_txt_result sts_tlsrpt_txt_parse_one(const void *record, size_t len,
					     struct sts_tlsrpt_txt *out);

#endif
