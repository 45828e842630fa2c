// What every script here shares: the official Stripe Node SDK as tools/package.json pins it, pointed
// at the emulator the Python test started (KUPLOY_EMULATOR_URL, KUPLOY_STRIPE_KEY), and one JSON answer.
import { createRequire } from 'node:module';

const require = createRequire(new URL('../../tools/package.json', import.meta.url));
export const Stripe = require('stripe');

export function client(options = {}) {
  const url = new URL(process.env.KUPLOY_EMULATOR_URL);
  return new Stripe(process.env.KUPLOY_STRIPE_KEY, {
    host: url.hostname,
    port: Number(url.port),
    protocol: 'http',
    maxNetworkRetries: 0,
    ...options,
  });
}

// The fields an integration reads off a StripeError (Node's names, not the wire's).
export function errorFields(error) {
  if (!(error instanceof Stripe.errors.StripeError)) throw error;
  return {
    class: error.constructor.name,
    type: error.type,
    rawType: error.raw?.type ?? null,
    code: error.code ?? null,
    declineCode: error.decline_code ?? null,
    param: error.param ?? null,
    message: error.message,
    requestId: error.requestId ?? null,
    statusCode: error.statusCode ?? null,
    docUrl: error.doc_url ?? null,
    requestLogUrl: error.raw?.request_log_url ?? null,
    paymentIntent: error.payment_intent?.id ?? null,
    paymentIntentStatus: error.payment_intent?.status ?? null,
  };
}

// The error a call throws, as errorFields; fails loudly when it does not throw.
export async function failure(call) {
  try {
    await call();
  } catch (error) {
    return errorFields(error);
  }
  throw new Error('expected the call to throw a StripeError');
}

export function answer(result) {
  process.stdout.write(JSON.stringify(result) + '\n');
}
