// This module is browser compatible.

/**
 * The client's transaction, which lives in `src/model/transaction.ts` so the
 * server's `realm(path).write()` builds changesets with the same rules.
 */

export { finishTransaction, Transaction } from "../model/transaction.ts";
