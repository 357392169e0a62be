// Filter and sort for the claims ledger (book/ledger.md), self-contained: no library, no network.
// Each row carries the classes ledger-chapter-*, ledger-kind-* and ledger-verdict-*
// (cgclib/book/sphinx_ledger.py); the controls are built from what the rows hold.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const table = document.querySelector("table.claims-ledger");
  if (!table || !table.tBodies.length) return;
  const rows = Array.from(table.tBodies[0].rows);
  const facets = { chapter: "ledger-chapter-", kind: "ledger-kind-", verdict: "ledger-verdict-" };
  const facet = (row, prefix) => {
    const found = Array.from(row.classList).find((c) => c.startsWith(prefix));
    return found ? found.slice(prefix.length) : "";
  };

  const form = document.createElement("form");
  form.className = "ledger-controls";
  form.setAttribute("aria-label", "Filter the claims ledger");
  const selects = {};
  for (const [name, prefix] of Object.entries(facets)) {
    const label = document.createElement("label");
    label.append(`${name} `);
    const select = document.createElement("select");
    select.name = name;
    select.append(new Option("all", ""));
    for (const value of [...new Set(rows.map((r) => facet(r, prefix)))].sort()) {
      select.append(new Option(value.replace(/-/g, " "), value));
    }
    label.append(select);
    form.append(label);
    selects[name] = select;
  }
  const textLabel = document.createElement("label");
  textLabel.append("text ");
  const text = document.createElement("input");
  text.type = "search";
  text.name = "text";
  text.placeholder = "words of a claim or id";
  textLabel.append(text);
  form.append(textLabel);
  const count = document.createElement("output");
  count.className = "ledger-count";
  count.setAttribute("aria-live", "polite");
  form.append(count);

  const apply = () => {
    const words = text.value.trim().toLowerCase();
    let shown = 0;
    for (const row of rows) {
      const visible =
        Object.entries(facets).every(([name, prefix]) => !selects[name].value || facet(row, prefix) === selects[name].value) &&
        (!words || row.textContent.toLowerCase().includes(words));
      row.hidden = !visible;
      shown += visible ? 1 : 0;
    }
    count.value = `${shown} of ${rows.length} claims shown`;
  };
  form.addEventListener("input", apply);
  form.addEventListener("change", apply);
  form.addEventListener("submit", (event) => event.preventDefault());
  (table.closest(".table-wrapper") || table).before(form);

  // Sorting: a button in each header cell; verdicts sort by severity, other columns by text.
  const severity = { fails: 0, inconclusive: 1, holds: 2, descriptive: 3 };
  const headers = Array.from(table.tHead.rows[0].cells);
  headers.forEach((cell, column) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "ledger-sort";
    button.textContent = cell.textContent.trim();
    button.title = `sort by ${button.textContent.toLowerCase()}`;
    cell.replaceChildren(button);
    button.addEventListener("click", () => {
      const ascending = cell.getAttribute("aria-sort") !== "ascending";
      headers.forEach((h) => h.removeAttribute("aria-sort"));
      cell.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      // verdicts by severity, numbers by value, ids and other text by code point (lower case)
      const key = (row) => {
        const cell = row.cells[column];
        const id = cell.querySelector("code"); // the claim column sorts by the claim's id
        const value = (id || cell).textContent.trim();
        if (value in severity) return severity[value];
        const number = Number.parseFloat(value);
        return Number.isNaN(number) ? value.toLowerCase() : number;
      };
      const compare = (a, b) => {
        const [x, y] = [key(a), key(b)];
        if (typeof x !== typeof y) return typeof x === "number" ? -1 : 1;
        return x < y ? -1 : x > y ? 1 : 0;
      };
      const sorted = [...rows].sort(compare);
      if (!ascending) sorted.reverse();
      table.tBodies[0].append(...sorted);
    });
  });
  apply();
});
