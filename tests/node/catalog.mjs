// The catalog half of a kuploy-cloud billing integration: products and prices created, updated,
// listed with auto-pagination, retrieved with expand, found by search and by lookup_keys.
import { answer, client } from './client.mjs';

const stripe = client();
const out = {};

const product = await stripe.products.create({
  name: 'Pro',
  description: 'For teams',
  metadata: { kuploy_plan: 'pro' },
});
const monthly = await stripe.prices.create({
  product: product.id,
  unit_amount: 2000,
  currency: 'usd',
  recurring: { interval: 'month' },
  lookup_key: 'pro_monthly',
  metadata: { kuploy_plan: 'pro' },
});
const yearly = await stripe.prices.create({
  product: product.id,
  unit_amount: 20000,
  currency: 'usd',
  recurring: { interval: 'year' },
  lookup_key: 'pro_yearly',
});
out.product = product.id;
out.prices = [monthly.id, yearly.id];

const updated = await stripe.products.update(product.id, {
  name: 'Pro (2026)',
  default_price: monthly.id,
  metadata: { tier: 'paid' },
});
out.updated = { name: updated.name, defaultPrice: updated.default_price, metadata: updated.metadata };
out.priceUpdated = (await stripe.prices.update(yearly.id, { nickname: 'Yearly', metadata: { kuploy_plan: 'pro' } }))
  .nickname;

// 12 more products: three pages of 5 walked by `for await`, every id once, newest first.
for (let i = 0; i < 12; i++) await stripe.products.create({ name: `Extra ${i}` });
out.walked = [];
for await (const p of stripe.products.list({ limit: 5 })) out.walked.push(p.id);
out.autoPagingToArray = (await stripe.products.list({ limit: 5 }).autoPagingToArray({ limit: 100 })).length;

const expanded = await stripe.prices.retrieve(monthly.id, { expand: ['product'] });
out.expandedProduct = { id: expanded.product.id, object: expanded.product.object, name: expanded.product.name };
const listed = await stripe.prices.list({ product: product.id, expand: ['data.product'] });
out.listedExpanded = listed.data.map((p) => typeof p.product === 'object' && p.product.id === product.id);

const byLookup = await stripe.prices.list({ lookup_keys: ['pro_monthly', 'pro_yearly'], active: true });
out.byLookup = byLookup.data.map((p) => p.lookup_key).sort();

const search = await stripe.products.search({ query: "active:'true' AND metadata['kuploy_plan']:'pro'" });
out.search = { object: search.object, ids: search.data.map((p) => p.id), hasMore: search.has_more };
const priceSearch = await stripe.prices.search({ query: "lookup_key:'pro_yearly'" });
out.priceSearch = priceSearch.data.map((p) => p.id);
// A search walked page by page with `next_page` (auto-pagination of a search_result).
out.searchWalked = [];
for await (const p of stripe.products.search({ query: "active:'true'", limit: 5 })) out.searchWalked.push(p.id);

answer(out);
