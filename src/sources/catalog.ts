import type { ConfigOperatorCatalog } from '../config/config.js';
import type { CreateContext, SourceKind, SourcePlan } from './source.js';
import { BundleError } from '../util/errors.js';

export async function planCatalogs(_catalogs: ConfigOperatorCatalog[], _ctx: CreateContext): Promise<SourcePlan> {
  throw new BundleError('operators: not implemented yet');
}

export const operatorsKind: SourceKind<ConfigOperatorCatalog[]> = {
  kind: 'operators',
  section: (config) => (config.operators.length > 0 ? config.operators : undefined),
  plan: planCatalogs,
};
