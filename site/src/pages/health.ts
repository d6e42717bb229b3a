// `/health`: the server's health report.

import { api } from "../api";
import { h, notice, replace } from "../dom";
import { renderHealth } from "../health";
import { frame } from "../layout";
import type { PageContext } from "../page";
import { errorText, handledAuth } from "../page";

/** `/health`. */
export function health(root: HTMLElement, ctx: PageContext): void {
  ctx.title("Health");
  const main = frame(root, ctx, "health");
  const body = h("div", {}, h("p", { class: "muted" }, "Running checks…"));
  const again = h("button", { type: "button", class: "button" }, "Run again");
  replace(main, h("div", { class: "page-head" }, h("h1", {}, "Health"), h("div", { class: "spacer" }), again), body);
  const load = async (force: boolean) => {
    again.disabled = true;
    try {
      const report = await api.health(force);
      if (ctx.live()) replace(body, renderHealth(report));
    } catch (e) {
      if (ctx.live() && !handledAuth(ctx, e)) replace(body, notice("error", `Could not get the health report: ${errorText(e)}`));
    }
    again.disabled = false;
  };
  again.addEventListener("click", () => void load(true));
  void load(false);
}
