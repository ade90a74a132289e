/* Finds the Message-ID field in a header section fed in pieces of any size:
 * a small state machine over the bytes, bounded, never allocating. */
#include "smtp/msgid.h"

#include <ctype.h>
#include <string.h>

static const char field[] = "message-id:";

enum {
	S_BOL,       /* at the start of a line */
	S_NAME,      /* matching "message-id:" */
	S_SKIP,      /* the rest of a line we do not want */
	S_VALUE,     /* inside the Message-ID value */
	S_VALUE_EOL, /* after the value's line end: a fold continues it */
	S_CR,        /* a CR at the start of a line: the empty line, surely */
};

void smtp_msgid_init(struct smtp_msgid_scan *s)
{
	memset(s, 0, sizeof(*s));
	s->state = S_BOL;
}

static void value_put(struct smtp_msgid_scan *s, char c)
{
	if ((unsigned char)c < 0x20 || c == 0x7f || s->len >= SMTP_MSGID_MAX)
		return;
	if (s->len == 0 && (c == ' ' || c == '\t'))
		return; /* the blanks after the colon (or a fold) are not the value */
	s->value[s->len++] = c;
	s->value[s->len] = '\0';
}

/* A new line begins with c: an empty line ends the header section. */
static void line_start(struct smtp_msgid_scan *s, char c)
{
	if (c == '\n') {
		s->done = true;
		return;
	}
	if (c == '\r') {
		s->state = S_CR;
		return;
	}
	s->matched = 0;
	s->state = S_NAME;
	if (tolower((unsigned char)c) == field[0]) {
		s->matched = 1;
		return;
	}
	s->state = S_SKIP;
}

void smtp_msgid_feed(struct smtp_msgid_scan *s, const char *buf, size_t len)
{
	size_t i;

	for (i = 0; i < len && !s->done; i++) {
		char c = buf[i];

		switch (s->state) {
		case S_BOL:
			line_start(s, c);
			break;
		case S_CR:
			s->done = c == '\n';
			if (!s->done)
				line_start(s, c);
			break;
		case S_NAME:
			if (c == '\n') {
				s->state = S_BOL;
			} else if (tolower((unsigned char)c) == field[s->matched]) {
				if (++s->matched == sizeof(field) - 1) {
					/* the first field wins, as a reader would take it */
					s->state = s->found ? S_SKIP : S_VALUE;
					s->found = true;
				}
			} else {
				s->state = S_SKIP;
			}
			break;
		case S_SKIP:
			if (c == '\n')
				s->state = S_BOL;
			break;
		case S_VALUE:
			if (c == '\n')
				s->state = S_VALUE_EOL;
			else
				value_put(s, c);
			break;
		case S_VALUE_EOL:
			if (c == ' ' || c == '\t') {
				value_put(s, ' '); /* a fold: the value goes on */
				s->state = S_VALUE;
			} else {
				line_start(s, c);
			}
			break;
		}
	}
}

const char *smtp_msgid_value(struct smtp_msgid_scan *s)
{
	if (!s->found)
		return NULL;
	while (s->len > 0 && (s->value[s->len - 1] == ' ' || s->value[s->len - 1] == '\t'))
		s->value[--s->len] = '\0';
	return s->value;
}
