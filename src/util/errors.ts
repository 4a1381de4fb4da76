/**
 * Errors the CLI turns into one clear line and an exit code, never a stack trace.
 * Exit codes: 0 success, 1 the operation ran and failed (verification failed,
 * a registry refused or lacks content), 2 usage or input error.
 */
export class BundleError extends Error {
  constructor(
    message: string,
    readonly exitCode: 1 | 2 = 1,
    readonly hint?: string,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** Bad input from the user: flags, config, a file that is not a bundle. Exit 2. */
export class UsageError extends BundleError {
  constructor(message: string, hint?: string) {
    super(message, 2, hint);
  }
}

/** A digest or size did not match what was promised. Never retried into success. */
export class DigestMismatchError extends BundleError {
  constructor(
    readonly expected: string,
    readonly actual: string,
    readonly what: string,
  ) {
    super(`digest mismatch for ${what}: expected ${expected}, got ${actual}`, 1);
  }
}

/** What was asked for does not exist at the source (a manifest answered 404). */
export class NotFoundError extends BundleError {
  constructor(message: string) {
    super(message, 1);
  }
}

export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
