/* Fuzz target for the queue file decoders: a message header, and a state
 * file applied to whatever recipients that header (or a fixed one) gave. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "queue/queue.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct queue_envelope env;
	const char *err = NULL;
	char *copy, *text = NULL;
	size_t len;

	/* An exact-size copy, so reading one byte too far is caught. */
	copy = malloc(size ? size : 1);
	if (copy == NULL)
		return 0;
	memcpy(copy, data, size);

	if (queue_header_decode(copy, size, &env, &err) == 0) {
		struct queue_envelope again;
		size_t i;

		/* whatever decodes must encode, and decode back to the same */
		if (env.data_offset > size || queue_header_encode(&env, &text, &len) != 0 ||
		    queue_header_decode(text, len, &again, &err) != 0)
			abort();
		if (again.data_offset != len || strcmp(again.id, env.id) != 0 ||
		    again.queued_at != env.queued_at || strcmp(again.sender, env.sender) != 0 ||
		    strcmp(again.submitter, env.submitter) != 0 ||
		    strcmp(again.client, env.client) != 0 || again.flags != env.flags ||
		    again.nrcpts != env.nrcpts)
			abort();
		for (i = 0; i < env.nrcpts; i++)
			if (strcmp(again.rcpts[i].address, env.rcpts[i].address) != 0)
				abort();
		queue_envelope_clear(&again);
		free(text);
		text = NULL;
		/* the rest of the input as the state of these recipients */
		(void)queue_state_decode(copy + env.data_offset, size - (size_t)env.data_offset,
					 &env, &err);
	} else {
		if (err == NULL)
			abort();
		memset(&env, 0, sizeof(env));
		for (len = 0; len < 3; len++)
			if (queue_envelope_add_rcpt(&env, "a@b.example") != 0)
				abort();
		if (queue_state_decode(copy, size, &env, &err) == 0) {
			if (queue_state_encode(&env, &text, &len) != 0)
				abort();
			free(text);
		} else if (err == NULL) {
			abort();
		}
	}
	queue_envelope_clear(&env);
	free(copy);
	return 0;
}
