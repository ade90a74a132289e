/* SMTP server-side command parsing (RFC 5321 §4.1): one line in, one struct
 * out or a reply code with a reason. Pure: no I/O, no allocation. */
#include "smtp/command.h"

#include <ctype.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

static const struct {
	const char *name;
	enum smtp_verb verb;
} verbs[] = {
	{ "HELO", SMTP_CMD_HELO }, { "EHLO", SMTP_CMD_EHLO }, { "MAIL", SMTP_CMD_MAIL },
	{ "RCPT", SMTP_CMD_RCPT }, { "DATA", SMTP_CMD_DATA }, { "RSET", SMTP_CMD_RSET },
	{ "NOOP", SMTP_CMD_NOOP }, { "QUIT", SMTP_CMD_QUIT }, { "VRFY", SMTP_CMD_VRFY },
	{ "EXPN", SMTP_CMD_EXPN }, { "HELP", SMTP_CMD_HELP }, { "STARTTLS", SMTP_CMD_STARTTLS },
	{ "AUTH", SMTP_CMD_AUTH }, { "BDAT", SMTP_CMD_BDAT },
};

static bool ieq_prefix(const char *s, size_t len, const char *prefix)
{
	size_t n = strlen(prefix);
	return len >= n && strncasecmp(s, prefix, n) == 0;
}

/* Reads "<path>" at *pp (up to end). Quoted local parts may hold '>' and
 * spaces, so the closing bracket is found outside quotes. A source route
 * ("@a,@b:") is dropped (RFC 5321 §4.1.2, "MUST accept and ignore"). */
static int parse_path(const char **pp, const char *end, char *out, bool is_mail,
		      const char **reason)
{
	const char *p = *pp, *start, *q;
	bool quoted = false;
	size_t n;

	if (p >= end || *p != '<') {
		*reason = "5.5.4 Syntax error in address: missing '<'";
		return 501;
	}
	start = ++p;
	for (q = start; q < end; q++) {
		if (quoted && *q == '\\' && q + 1 < end) {
			q++;
			continue;
		}
		if (*q == '"')
			quoted = !quoted;
		else if (!quoted && *q == '>')
			break;
	}
	if (q >= end) {
		*reason = "5.5.4 Syntax error in address: missing '>'";
		return 501;
	}
	*pp = q + 1;
	if (start < q && *start == '@') {
		const char *colon = memchr(start, ':', (size_t)(q - start));
		if (colon == NULL) {
			*reason = "5.5.4 Syntax error in source route";
			return 501;
		}
		start = colon + 1;
	}
	n = (size_t)(q - start);
	if (n == 0) {
		if (!is_mail) {
			*reason = "5.1.3 Bad recipient address syntax";
			return 501;
		}
		out[0] = '\0';
		return 0;
	}
	if (n > SMTP_PATH_MAX) {
		*reason = is_mail ? "5.1.7 Sender address too long"
				  : "5.1.3 Recipient address too long";
		return 501;
	}
	memcpy(out, start, n);
	out[n] = '\0';
	/* RFC 5321 §4.5.1: RCPT TO:<Postmaster> without a domain must work; the
	 * listener then applies alias_root like any local recipient. */
	if (!is_mail && strcasecmp(out, "postmaster") == 0)
		return 0;
	if (smtp_address_valid(out) != 0) {
		*reason = is_mail ? "5.1.7 Bad sender address syntax"
				  : "5.1.3 Bad recipient address syntax";
		return 501;
	}
	return 0;
}

static int parse_mail_params(const char *p, const char *end, struct smtp_command *cmd,
			     const char **reason)
{
	while (p < end) {
		const char *kw, *eq, *val, *tok_end;
		size_t klen, vlen;

		while (p < end && *p == ' ')
			p++;
		if (p >= end)
			break;
		kw = p;
		tok_end = memchr(p, ' ', (size_t)(end - p));
		if (tok_end == NULL)
			tok_end = end;
		p = tok_end;
		eq = memchr(kw, '=', (size_t)(tok_end - kw));
		klen = (size_t)((eq ? eq : tok_end) - kw);
		val = eq ? eq + 1 : NULL;
		vlen = eq ? (size_t)(tok_end - val) : 0;

		if (klen == 4 && strncasecmp(kw, "SIZE", 4) == 0) {
			uint64_t v = 0;
			size_t i;
			if (val == NULL || vlen == 0 || vlen > 20 || cmd->has_size) {
				*reason = "5.5.4 Bad SIZE parameter";
				return 501;
			}
			for (i = 0; i < vlen; i++) {
				if (!isdigit((unsigned char)val[i]) || v > (UINT64_MAX - 9) / 10) {
					*reason = "5.5.4 Bad SIZE parameter";
					return 501;
				}
				v = v * 10 + (uint64_t)(val[i] - '0');
			}
			cmd->size = v;
			cmd->has_size = 1;
		} else if (klen == 4 && strncasecmp(kw, "BODY", 4) == 0) {
			if (val != NULL && vlen == 4 && strncasecmp(val, "7BIT", 4) == 0)
				cmd->body = SMTP_BODY_7BIT;
			else if (val != NULL && vlen == 8 && strncasecmp(val, "8BITMIME", 8) == 0)
				cmd->body = SMTP_BODY_8BITMIME;
			else {
				*reason = "5.5.4 BODY must be 7BIT or 8BITMIME";
				return 501;
			}
		} else if (klen == 8 && strncasecmp(kw, "SMTPUTF8", 8) == 0 && val == NULL) {
			cmd->smtputf8 = 1;
		} else {
			*reason = "5.5.4 Unsupported MAIL parameter";
			return 555;
		}
	}
	return 0;
}

int smtp_command_parse(const char *line, size_t len, struct smtp_command *cmd, const char **reason)
{
	const char *p, *end, *sp;
	size_t vlen, i, alen;
	int rc;

	memset(cmd, 0, sizeof(*cmd));
	cmd->verb = SMTP_CMD_UNKNOWN;
	*reason = NULL;

	if (len > 0 && line[len - 1] == '\n')
		len--;
	if (len > 0 && line[len - 1] == '\r')
		len--;
	if (len > SMTP_LINE_MAX - 2) {
		*reason = "5.5.2 Line too long";
		return 500;
	}
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)line[i];
		if ((c < 0x20 && c != '\t') || c == 0x7f) {
			*reason = "5.5.2 Syntax error: control character in command";
			return 500;
		}
	}
	/* trailing blanks are common from hand-typed sessions; ignore them */
	while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\t'))
		len--;
	end = line + len;
	sp = memchr(line, ' ', len);
	vlen = sp ? (size_t)(sp - line) : len;
	for (i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		if (strlen(verbs[i].name) == vlen && strncasecmp(line, verbs[i].name, vlen) == 0)
			cmd->verb = verbs[i].verb;
	if (cmd->verb == SMTP_CMD_UNKNOWN) {
		*reason = "5.5.2 Error: command not recognized";
		return 500;
	}
	p = line + vlen;
	while (p < end && *p == ' ')
		p++;
	alen = (size_t)(end - p);
	memcpy(cmd->arg, p, alen);
	cmd->arg[alen] = '\0';

	switch (cmd->verb) {
	case SMTP_CMD_HELO:
	case SMTP_CMD_EHLO:
		if (alen == 0) {
			*reason = cmd->verb == SMTP_CMD_HELO ? "5.5.4 Syntax: HELO hostname"
							     : "5.5.4 Syntax: EHLO hostname";
			return 501;
		}
		if (alen > SMTP_DOMAIN_MAX) {
			*reason = "5.5.4 Hostname too long";
			return 501;
		}
		for (i = 0; i < alen; i++) {
			unsigned char c = (unsigned char)p[i];
			/* the name goes into the Received header: printable ASCII only */
			if (c <= 0x20 || c > 0x7e) {
				*reason = "5.5.4 Invalid hostname";
				return 501;
			}
		}
		return 0;
	case SMTP_CMD_MAIL:
	case SMTP_CMD_RCPT: {
		bool mail = cmd->verb == SMTP_CMD_MAIL;
		const char *kw = mail ? "FROM:" : "TO:";

		if (!ieq_prefix(p, alen, kw)) {
			*reason = mail ? "5.5.4 Syntax: MAIL FROM:<address>"
				       : "5.5.4 Syntax: RCPT TO:<address>";
			return 501;
		}
		p += strlen(kw);
		if (p < end && *p == ' ')
			p++;
		rc = parse_path(&p, end, cmd->path, mail, reason);
		if (rc != 0)
			return rc;
		if (p < end && *p != ' ') {
			*reason = "5.5.4 Syntax error after address";
			return 501;
		}
		if (mail)
			return parse_mail_params(p, end, cmd, reason);
		while (p < end && *p == ' ')
			p++;
		if (p < end) {
			*reason = "5.5.4 Unsupported RCPT parameter";
			return 555;
		}
		return 0;
	}
	case SMTP_CMD_DATA:
	case SMTP_CMD_RSET:
	case SMTP_CMD_QUIT:
	case SMTP_CMD_STARTTLS:
		if (alen != 0) {
			*reason = "5.5.4 Syntax error: no parameters allowed";
			return 501;
		}
		return 0;
	case SMTP_CMD_VRFY:
	case SMTP_CMD_EXPN:
		if (alen == 0) {
			*reason = cmd->verb == SMTP_CMD_VRFY ? "5.5.4 Syntax: VRFY address"
							     : "5.5.4 Syntax: EXPN name";
			return 501;
		}
		return 0;
	default:
		return 0;
	}
}
