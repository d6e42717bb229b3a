// @vitest-environment jsdom
import { describe, expect, it } from "vitest";
import { confirmCommand, confirmQuestion } from "../src/terminal/confirm";

function click(host: HTMLElement, action: string) {
  host.querySelector<HTMLButtonElement>(`[data-action="${action}"]`)!.click();
}

describe("command confirmation", () => {
  it("asks with the command and the workspace", () => {
    expect(confirmQuestion("rm -rf ~", "dev")).toBe('Run "rm -rf ~" in dev?');
  });

  it("resolves true on Run and removes itself", async () => {
    const host = document.createElement("div");
    const answer = confirmCommand(host, "htop", "dev");
    expect(host.querySelector('[role="dialog"] h2')!.textContent).toBe('Run "htop" in dev?');
    expect(host.querySelector("pre")!.textContent).toBe("htop");
    click(host, "run");
    await expect(answer).resolves.toBe(true);
    expect(host.querySelector('[role="dialog"]')).toBeNull();
  });

  it("resolves false on Cancel and on Escape", async () => {
    const host = document.createElement("div");
    const a = confirmCommand(host, "htop", "dev");
    click(host, "cancel");
    await expect(a).resolves.toBe(false);
    const b = confirmCommand(host, "htop", "dev");
    host.querySelector('[role="dialog"]')!.dispatchEvent(new KeyboardEvent("keydown", { key: "Escape" }));
    await expect(b).resolves.toBe(false);
  });

  it("shows markup in the command as text", () => {
    const host = document.createElement("div");
    void confirmCommand(host, "<script>alert(1)</script>", "dev");
    expect(host.querySelector("script")).toBeNull();
    expect(host.querySelector("pre")!.textContent).toBe("<script>alert(1)</script>");
  });
});
