// A `?command=` link runs a command in the user's workspace, and the session cookie rides
// along on a link from anywhere, so the page asks before running it.

import { h } from "../dom";

/** The question asked. */
export function confirmQuestion(command: string, workspace: string): string {
  return `Run ${JSON.stringify(command)} in ${workspace}?`;
}

/**
 * Shows the question in `host` and resolves true when the user chooses Run, false on
 * Cancel. Nothing connects before it resolves.
 */
export function confirmCommand(host: HTMLElement, command: string, workspace: string): Promise<boolean> {
  return new Promise((resolve) => {
    const run = h("button", { type: "button", class: "button primary", "data-action": "run" }, "Run");
    const cancel = h("button", { type: "button", class: "button", "data-action": "cancel" }, "Cancel");
    const dialog = h(
      "div",
      { class: "confirm", role: "dialog", "aria-modal": "true", "aria-labelledby": "confirm-title" },
      h("h2", { id: "confirm-title" }, confirmQuestion(command, workspace)),
      h("p", {}, "A link asked to run this command in your workspace. Run it only if you trust where the link came from."),
      h("pre", { class: "code" }, command),
      h("div", { class: "buttons" }, cancel, run),
    );
    const done = (answer: boolean) => {
      dialog.remove();
      resolve(answer);
    };
    run.addEventListener("click", () => done(true));
    cancel.addEventListener("click", () => done(false));
    dialog.addEventListener("keydown", (e) => {
      if (e.key === "Escape") done(false);
    });
    host.appendChild(dialog);
    cancel.focus();
  });
}
