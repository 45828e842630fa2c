// Idempotency keys and errors as a Node integration meets them: a replayed key returns the first
// answer, the same key with other params or on another endpoint is a StripeIdempotencyError, and
// each error class carries type, code, param, requestId and statusCode.
import { answer, client, failure } from './client.mjs';

const stripe = client();
const out = {};

const first = await stripe.products.create({ name: 'Idem' }, { idempotencyKey: 'kuploy-node-1' });
const again = await stripe.products.create({ name: 'Idem' }, { idempotencyKey: 'kuploy-node-1' });
out.replay = { first: first.id, again: again.id, replayed: again.lastResponse.headers['idempotent-replayed'] ?? null };
out.otherParams = await failure(() => stripe.products.create({ name: 'Other' }, { idempotencyKey: 'kuploy-node-1' }));
out.otherEndpoint = await failure(() =>
  stripe.customers.create({ email: 'idem@example.com' }, { idempotencyKey: 'kuploy-node-1' }),
);

out.missing = await failure(() => stripe.products.retrieve('prod_doesNotExist'));
out.badParam = await failure(() =>
  stripe.prices.create({ product: first.id, unit_amount: -5, currency: 'usd' }),
);
out.unknownParam = await failure(() => stripe.products.create({ name: 'X', colour: 'red' }));
out.tooManyLookupKeys = await failure(() =>
  stripe.prices.list({ lookup_keys: Array.from({ length: 11 }, (_, i) => `k${i}`) }),
);
out.authentication = await failure(() => client().products.list({}, { apiKey: 'not-a-stripe-key' }));
out.badVersion = await failure(() => client({ apiVersion: '2019-01-01' }).products.list());

// Stripe endpoints the emulator does not model are refused saying so, not taken for another route.
const customer = await stripe.customers.create({ email: 'preview@example.com' });
out.unmodelled = {
  createPreview: await failure(() => stripe.invoices.createPreview({ customer: customer.id })),
  invoiceSearch: await failure(() => stripe.invoices.search({ query: "status:'open'" })),
  portal: await failure(() =>
    stripe.billingPortal.sessions.create({ customer: customer.id, return_url: 'https://cloud.example.com' }),
  ),
};

answer(out);
