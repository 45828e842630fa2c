// The server side of Stripe's "Build a subscriptions integration" guide, as written for Node: a
// default_incomplete subscription that saves the card it is paid with as its default.
import { answer, client } from './client.mjs';

const stripe = client();
const out = {};

const product = await stripe.products.create({ name: 'Starter' });
const price = await stripe.prices.create({
  product: product.id,
  unit_amount: 900,
  currency: 'usd',
  recurring: { interval: 'month' },
});
const customer = await stripe.customers.create({ email: 'guide@example.com' });

const subscription = await stripe.subscriptions.create({
  customer: customer.id,
  items: [{ price: price.id }],
  payment_behavior: 'default_incomplete',
  payment_settings: { save_default_payment_method: 'on_subscription' },
  expand: ['latest_invoice.confirmation_secret'],
});
const secret = subscription.latest_invoice.confirmation_secret.client_secret;
// What Stripe.js would do in the browser (confirmPayment), done from the server with the test card.
await stripe.paymentIntents.confirm(secret.split('_secret_')[0], {
  payment_method: 'pm_card_visa',
  return_url: 'https://cloud.example.com/billing/return',
});
const after = await stripe.subscriptions.retrieve(subscription.id);
out.subscription = { id: after.id, status: after.status, defaultPaymentMethod: after.default_payment_method };

answer(out);
