// stripe-node's own retries (maxNetworkRetries, one idempotency key per call) against injected 500s:
// a 500 before the write is retried and succeeds; a 500 after it says Stripe-Should-Retry: false and
// is thrown, its write kept. Either way each call writes at most once.
import { answer, client } from './client.mjs';

const stripe = client({ maxNetworkRetries: 3 });
const out = { created: [], thrown: [] };
for (let i = 0; i < 30; i++) {
  try {
    out.created.push((await stripe.products.create({ name: `retry-${i}` })).name);
  } catch (error) {
    out.thrown.push({ name: `retry-${i}`, status: error.statusCode, shouldRetry: error.headers?.['stripe-should-retry'] ?? null });
  }
}
answer(out);
// After a retry, stripe-node's 80 s request timeout (req.setTimeout on its keep-alive socket) keeps Node
// running that long once the work is done (measured: 80 s idle); nothing is pending, so leave now.
process.exit(0);
