// An invoice's payments, read with expand: since 2025-03-31.basil the way from an invoice to the
// PaymentIntent that paid it (`invoice.payment_intent` is gone from the newest shape).
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
const customer = await stripe.customers.create({
  email: 'payments@example.com',
  payment_method: 'pm_card_visa',
  invoice_settings: { default_payment_method: 'pm_card_visa' },
});
const subscription = await stripe.subscriptions.create({ customer: customer.id, items: [{ price: price.id }] });

const invoice = await stripe.invoices.retrieve(subscription.latest_invoice, { expand: ['payments'] });
out.invoice = {
  id: invoice.id,
  status: invoice.status,
  payments: (invoice.payments?.data ?? []).map((p) => ({
    status: p.status,
    type: p.payment?.type ?? null,
    paymentIntent: p.payment?.payment_intent ?? null,
    amountPaid: p.amount_paid,
  })),
};

answer(out);
