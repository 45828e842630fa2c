// The billing half of a kuploy-cloud integration: a customer saved with a test card, subscriptions
// under each payment_behavior a server integration uses, their invoices, and PaymentIntents
// confirmed with a card that pays and with cards that decline.
import { answer, client, failure } from './client.mjs';

const stripe = client();
const out = {};

const product = await stripe.products.create({ name: 'Team' });
const price = await stripe.prices.create({
  product: product.id,
  unit_amount: 2900,
  currency: 'usd',
  recurring: { interval: 'month' },
});

// A customer created with the test card, which becomes its default for invoices.
const payer = await stripe.customers.create({
  email: 'owner@example.com',
  payment_method: 'pm_card_visa',
  invoice_settings: { default_payment_method: 'pm_card_visa' },
  metadata: { organizationId: 'org_node' },
});
out.payer = { id: payer.id, defaultPaymentMethod: payer.invoice_settings.default_payment_method };
const cards = await stripe.customers.listPaymentMethods(payer.id, { type: 'card' });
out.payerCards = cards.data.map((pm) => ({ id: pm.id, brand: pm.card.brand, last4: pm.card.last4 }));

// allow_incomplete with a card on file: paid at once, active.
const paid = await stripe.subscriptions.create({
  customer: payer.id,
  items: [{ price: price.id }],
  payment_behavior: 'allow_incomplete',
  metadata: { organizationId: 'org_node' },
  expand: ['latest_invoice'],
});
out.paid = { id: paid.id, status: paid.status, invoice: paid.latest_invoice.id, invoiceStatus: paid.latest_invoice.status };

// default_incomplete (Stripe's recommended flow): incomplete, its first invoice open, with the
// confirmation secret the front end would confirm; the server then confirms the invoice's payment.
const pending = await stripe.customers.create({ email: 'new@example.com' });
const incomplete = await stripe.subscriptions.create({
  customer: pending.id,
  items: [{ price: price.id }],
  payment_behavior: 'default_incomplete',
  expand: ['latest_invoice.confirmation_secret'],
});
const secret = incomplete.latest_invoice.confirmation_secret;
out.incomplete = {
  id: incomplete.id,
  status: incomplete.status,
  invoice: incomplete.latest_invoice.id,
  invoiceStatus: incomplete.latest_invoice.status,
  secretType: secret?.type ?? null,
  secretShaped: typeof secret?.client_secret === 'string' && secret.client_secret.includes('_secret_'),
};
const intentId = secret.client_secret.split('_secret_')[0];
const confirmed = await stripe.paymentIntents.confirm(intentId, { payment_method: 'pm_card_visa' });
out.incompleteConfirmed = {
  intentStatus: confirmed.status,
  subscriptionStatus: (await stripe.subscriptions.retrieve(incomplete.id)).status,
  invoiceStatus: (await stripe.invoices.retrieve(incomplete.latest_invoice.id)).status,
};

// Invoices listed for the customer, and one made by hand: item, invoice, finalize, pay.
out.invoices = (await stripe.invoices.list({ customer: payer.id })).data.map((i) => i.id);
await stripe.invoiceItems.create({ customer: payer.id, amount: 1500, currency: 'usd', description: 'Extra build minutes' });
const draft = await stripe.invoices.create({ customer: payer.id, pending_invoice_items_behavior: 'include' });
const finalized = await stripe.invoices.finalizeInvoice(draft.id);
const settled = await stripe.invoices.pay(draft.id);
const lines = await stripe.invoices.listLineItems(draft.id);
out.manualInvoice = {
  id: draft.id,
  draft: draft.status,
  finalized: finalized.status,
  paid: settled.status,
  amountPaid: settled.amount_paid,
  lines: lines.data.map((l) => l.amount),
};

// PaymentIntents: created, then confirmed with the test card and the page 3-D Secure would come back
// to. Without that return_url, an intent open to redirect-based methods (the default) is refused.
const intent = await stripe.paymentIntents.create({ amount: 4200, currency: 'usd', customer: payer.id });
out.withoutReturnUrl = await failure(() => stripe.paymentIntents.confirm(intent.id, { payment_method: 'pm_card_visa' }));
const succeeded = await stripe.paymentIntents.confirm(intent.id, {
  payment_method: 'pm_card_visa',
  return_url: 'https://cloud.example.com/billing/return',
});
out.intent = { id: intent.id, before: intent.status, after: succeeded.status, received: succeeded.amount_received };
const charge = await stripe.charges.retrieve(succeeded.latest_charge);
out.charge = { id: charge.id, paid: charge.paid, status: charge.status, amount: charge.amount };

// Created and confirmed at once on the server, cards only (no redirect, so no return_url): declines.
const serverSide = { amount: 4200, currency: 'usd', confirm: true, automatic_payment_methods: { enabled: true, allow_redirects: 'never' } };
out.declined = await failure(() => stripe.paymentIntents.create({ ...serverSide, payment_method: 'pm_card_chargeDeclined' }));
out.insufficientFunds = await failure(() =>
  stripe.paymentIntents.create({ ...serverSide, payment_method: 'pm_card_visa_chargeDeclinedInsufficientFunds' }),
);
// A card that asks for 3-D Secure, confirmed with a return_url: the customer is sent to authenticate.
const threeDS = await stripe.paymentIntents.create({
  amount: 4200,
  currency: 'usd',
  payment_method: 'pm_card_threeDSecure2Required',
  confirm: true,
  return_url: 'https://cloud.example.com/billing/return',
});
out.threeDSecure = {
  status: threeDS.status,
  action: threeDS.next_action?.type ?? null,
  returnUrl: threeDS.next_action?.redirect_to_url?.return_url ?? null,
  url: threeDS.next_action?.redirect_to_url?.url ?? null,
};

// A customer deleted.
const leaving = await stripe.customers.create({ email: 'leaving@example.com' });
const gone = await stripe.customers.del(leaving.id);
out.deleted = { id: gone.id, deleted: gone.deleted };

answer(out);
