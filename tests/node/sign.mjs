// stripe.webhooks.generateTestHeaderString: the Stripe-Signature a Node test suite signs a payload
// with (argv: payload, secret), for kuploy's listener to verify.
import { answer, Stripe } from './client.mjs';

const [payload, secret] = process.argv.slice(2);
answer({ header: Stripe.webhooks.generateTestHeaderString({ payload, secret }) });
