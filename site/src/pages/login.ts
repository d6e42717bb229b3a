// The login page and the first-user setup page.

import { ApiError, api } from "../api";
import { h, notice, replace } from "../dom";
import type { PageContext } from "../page";
import { errorText } from "../page";
import { navigate, safeRedirect } from "../router";

function field(label: string, input: HTMLInputElement): HTMLElement {
  return h("label", { class: "field" }, h("span", {}, label), input);
}

function card(title: string, subtitle: string, form: HTMLFormElement): HTMLElement {
  return h(
    "main",
    { class: "auth" },
    h("div", { class: "auth-card" }, h("div", { class: "brand brand-large" }, "tether"), h("h1", {}, title), h("p", { class: "muted" }, subtitle), form),
  );
}

/** `/login`. */
export function login(root: HTMLElement, ctx: PageContext): void {
  ctx.title("Log in");
  const username = h("input", { name: "username", autocomplete: "username", required: true, autofocus: true });
  const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const message = h("div", { class: "form-message" });
  const submit = h("button", { type: "submit", class: "primary" }, "Log in");
  const form = h(
    "form",
    { class: "form" },
    field("Username or email", username),
    field("Password", password),
    message,
    submit,
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    submit.disabled = true;
    replace(message);
    api
      .login(username.value.trim(), password.value)
      .then(() => {
        const target = safeRedirect(new URLSearchParams(location.search).get("redirect"));
        // A full load, so the shell picks up the new session from scratch.
        location.assign(target);
      })
      .catch((err: unknown) => {
        submit.disabled = false;
        replace(message, notice("error", errorText(err)));
        password.select();
      });
  });
  replace(root, card("Log in", "Log in to reach your workspaces.", form));
  // A new server has no users yet: offer setup instead.
  api
    .firstUserExists()
    .then((exists) => {
      if (!exists && ctx.live()) navigate("/setup", { replace: true });
    })
    .catch(() => {});
}

/** `/setup`: creates the first user (an admin) on a new server. */
export function setup(root: HTMLElement, ctx: PageContext): void {
  ctx.title("Set up");
  const username = h("input", { name: "username", autocomplete: "username", required: true, autofocus: true, pattern: "[a-z0-9]([a-z0-9\\-]*[a-z0-9])?", title: "Lower-case letters, digits and dashes" });
  const email = h("input", { name: "email", type: "email", autocomplete: "email", required: true });
  const password = h("input", { name: "password", type: "password", autocomplete: "new-password", required: true, minlength: 8 });
  const confirm = h("input", { name: "confirm", type: "password", autocomplete: "new-password", required: true, minlength: 8 });
  const message = h("div", { class: "form-message" });
  const submit = h("button", { type: "submit", class: "primary" }, "Create account");
  const form = h(
    "form",
    { class: "form" },
    field("Username", username),
    field("Email", email),
    field("Password (at least 8 characters)", password),
    field("Password again", confirm),
    message,
    submit,
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    replace(message);
    if (password.value !== confirm.value) {
      replace(message, notice("error", "The passwords do not match."));
      confirm.select();
      return;
    }
    submit.disabled = true;
    api
      .createFirstUser(username.value.trim(), email.value.trim(), password.value)
      .then(() => location.assign("/"))
      .catch((err: unknown) => {
        submit.disabled = false;
        if (err instanceof ApiError && err.status === 409) {
          replace(message, notice("error", err.message, " ", h("a", { href: "/login" }, "Log in")));
        } else {
          replace(message, notice("error", errorText(err)));
        }
      });
  });
  replace(root, card("Welcome to tether", "Create the first user. It will be the server's admin.", form));
  api
    .firstUserExists()
    .then((exists) => {
      if (exists && ctx.live()) navigate("/login", { replace: true });
    })
    .catch(() => {});
}
