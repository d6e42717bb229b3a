// What every page gets from the app shell.

import type { Deployment, User } from "./api";
import { ApiError } from "./api";

/** The app shell's services for a mounted page. */
export interface PageContext {
  /** The logged-in user (null on the login and setup pages). */
  user: User | null;
  /** Public deployment facts, when they loaded. */
  deployment: Deployment | null;
  /** Runs `fn` when the page is left. */
  onLeave(fn: () => void): void;
  /** Sets the document title ("… · tether"). */
  title(text: string): void;
  /** The session is gone: go to the login page, coming back here after. */
  loggedOut(): void;
  /** Logs out and goes to the login page. */
  logout(): Promise<void>;
  /** Whether the page is still the one shown (false once left). */
  live(): boolean;
}

/** Handles a 401 by sending the user to log in; true when it did. */
export function handledAuth(ctx: PageContext, e: unknown): boolean {
  if (e instanceof ApiError && e.status === 401) {
    ctx.loggedOut();
    return true;
  }
  return false;
}

/** The sentence to show for a failure. */
export function errorText(e: unknown): string {
  if (e instanceof Error) return e.message;
  return String(e);
}
