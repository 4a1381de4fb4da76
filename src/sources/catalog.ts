import type { ConfigOperatorCatalog } from '../config/config.js';
import type { KindContext, KindPlan } from '../openshift/context.js';
import { BundleError } from '../util/errors.js';

export async function planCatalogs(_catalogs: ConfigOperatorCatalog[], _ctx: KindContext): Promise<KindPlan> {
  throw new BundleError('operators: not implemented yet');
}
