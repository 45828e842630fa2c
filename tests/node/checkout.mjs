// Checkout as kuploy-cloud sells a plan: a subscription-mode session for an organization, paid on the
// emulator's hosted page (the customer's part), and the signed events delivered to a webhook endpoint
// of this script's own HTTP server, each verified with stripe.webhooks.constructEvent and the endpoint's
// secret; plus a one-time payment session with its line items, and an expired session.
import http from 'node:http';
import { answer, client } from './client.mjs';

const stripe = client();
const out = {};
const WANTED = ['checkout.session.completed', 'customer.subscription.created', 'invoice.paid'];
const WAIT_MS = 60_000; // an upper bound for deliveries to land, not a timing assertion

// The receiver: keeps each raw body with its Stripe-Signature header, answers 200.
const deliveries = [];
let delivered = () => {};
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    deliveries.push({ path: req.url, body: Buffer.concat(chunks), signature: req.headers['stripe-signature'] });
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"received":true}');
    delivered();
  });
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const endpoint = await stripe.webhookEndpoints.create({
  url: `http://127.0.0.1:${server.address().port}/api/webhooks/stripe`,
  enabled_events: WANTED,
  description: 'kuploy-cloud (Node SDK test)',
});
out.endpoint = { id: endpoint.id, secretShaped: endpoint.secret.startsWith('whsec_') };
// An older integration's endpoint, pinned to the API version it was written for.
const pinned = await stripe.webhookEndpoints.create({
  url: `http://127.0.0.1:${server.address().port}/pinned`,
  enabled_events: ['invoice.paid'],
  api_version: '2023-08-16',
});

const product = await stripe.products.create({ name: 'Business' });
const price = await stripe.prices.create({
  product: product.id,
  unit_amount: 4900,
  currency: 'usd',
  recurring: { interval: 'month' },
});
const session = await stripe.checkout.sessions.create({
  mode: 'subscription',
  line_items: [{ price: price.id, quantity: 1 }],
  customer_email: 'billing@example.com',
  client_reference_id: 'org_node',
  metadata: { organizationId: 'org_node', planId: 'business' },
  subscription_data: { metadata: { organizationId: 'org_node', planId: 'business' } },
  success_url: 'https://cloud.example.com/billing/success?session_id={CHECKOUT_SESSION_ID}',
  cancel_url: 'https://cloud.example.com/billing',
});
out.session = { id: session.id, status: session.status, mode: session.mode, hasUrl: typeof session.url === 'string' };

// The customer pays on the hosted page (the emulator's stand-in for checkout.stripe.com).
const paid = await fetch(new URL(`/_emulator/checkout/${session.id}/complete`, process.env.KUPLOY_EMULATOR_URL), {
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ card: '4242424242424242' }),
});
if (paid.status !== 200) throw new Error(`completing the session: ${paid.status} ${await paid.text()}`);

const deadline = Date.now() + WAIT_MS;
const types = () => new Set(deliveries.map((d) => `${d.path === '/pinned' ? 'pinned ' : ''}${JSON.parse(d.body).type}`));
while (![...WANTED, 'pinned invoice.paid'].every((t) => types().has(t)) && Date.now() < deadline) {
  await new Promise((resolve) => {
    delivered = resolve;
    setTimeout(resolve, 500);
  });
}
server.close();

const main = deliveries.filter((d) => d.path !== '/pinned');
out.verified = main.map(({ body, signature }) => {
  const event = stripe.webhooks.constructEvent(body, signature, endpoint.secret);
  return { id: event.id, type: event.type, object: event.data.object.id, apiVersion: event.api_version };
});
const paidEvent = main.map((d) => JSON.parse(d.body)).find((e) => e.type === 'invoice.paid');
out.invoicePaidSubscription = paidEvent.data.object.parent?.subscription_details?.subscription ?? null;
out.pinned = deliveries
  .filter((d) => d.path === '/pinned')
  .map(({ body, signature }) => {
    const event = stripe.webhooks.constructEvent(body, signature, pinned.secret);
    const invoice = event.data.object;
    return { id: event.id, type: event.type, apiVersion: event.api_version, subscription: invoice.subscription ?? null, paid: invoice.paid ?? null };
  });
// The same body with one byte changed, or checked with another secret, is refused.
const sample = main.find((d) => JSON.parse(d.body).type === 'checkout.session.completed');
out.tampered = refusal(() =>
  stripe.webhooks.constructEvent(Buffer.from(sample.body.toString().replace('org_node', 'org_evil')), sample.signature, endpoint.secret),
);
out.wrongSecret = refusal(() => stripe.webhooks.constructEvent(sample.body, sample.signature, 'whsec_notTheEndpointSecret'));

const done = await stripe.checkout.sessions.retrieve(session.id, { expand: ['subscription', 'line_items'] });
out.completed = {
  status: done.status,
  paymentStatus: done.payment_status,
  clientReferenceId: done.client_reference_id,
  subscription: done.subscription.id,
  subscriptionStatus: done.subscription.status,
  subscriptionMetadata: done.subscription.metadata,
  lineItems: done.line_items.data.map((l) => ({ price: l.price.id, quantity: l.quantity })),
};

// A one-time payment for two units: its line items, listed; then an unpaid session expired.
const oneTime = await stripe.prices.create({ product: product.id, unit_amount: 1200, currency: 'usd' });
const payment = await stripe.checkout.sessions.create({
  mode: 'payment',
  line_items: [{ price: oneTime.id, quantity: 2 }],
  success_url: 'https://cloud.example.com/billing/success',
});
const items = await stripe.checkout.sessions.listLineItems(payment.id);
out.payment = {
  mode: payment.mode,
  amountTotal: payment.amount_total,
  items: items.data.map((l) => ({ price: l.price.id, quantity: l.quantity, amount: l.amount_total })),
};
const expired = await stripe.checkout.sessions.expire(payment.id);
out.expired = { status: expired.status };

answer(out);

function refusal(check) {
  try {
    check();
  } catch (error) {
    return error.constructor.name;
  }
  return null;
}
