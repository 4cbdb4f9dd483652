/**
 * Tether's command line: `serve` runs a sync server.
 *
 * @module
 */

export {};
