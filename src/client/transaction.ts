// This module is browser compatible.

/**
 * The client's transaction, which lives in `src/model/transaction.ts` so the
 * server's `realm(path).write()` builds changesets with the same rules.
 */

export { Transaction, TransactionWrites } from "../model/transaction.ts";
