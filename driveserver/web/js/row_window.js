// Only the rows near the screen are in the DOM: a folder of 10,000 entries is a few dozen <tr>
// between two spacer rows whose heights stand for the rest. Rows have one fixed height (names
// never wrap), measured from a rendered row, so row i sits at i × height. The page itself
// scrolls; on scroll or resize the window moves (once per frame).

import {h} from './dom.js';

const DEFAULT_ROW_PX = 40;
const OVERSCAN = 15; // rows rendered beyond each edge of the screen

export class RowWindow {
  /**
   * `renderRow(index)` builds the <tr> of row `index`; `focused()` is the index of the row that
   * holds the keyboard focus (kept on it across renders); `columns` is the table's width.
   */
  constructor(tbody, {renderRow, focused, columns}) {
    this.tbody = tbody;
    this.renderRow = renderRow;
    this.focused = focused;
    this.count = 0;
    this.start = 0;
    this.end = 0;
    this.rowPx = DEFAULT_ROW_PX;
    this.measured = false;
    this.active = true; // false while the grid view shows instead
    this.top = h('tr', {class: 'spacer', 'aria-hidden': 'true'}, h('td', {colspan: columns}));
    this.bottom = h('tr', {class: 'spacer', 'aria-hidden': 'true'}, h('td', {colspan: columns}));
    this.pending = false;
    this.onScroll = () => {
      if (this.pending || !this.active) return;
      this.pending = true;
      requestAnimationFrame(() => {
        this.pending = false;
        this.update();
      });
    };
    window.addEventListener('scroll', this.onScroll, {passive: true});
    window.addEventListener('resize', () => {
      this.measured = false;
      this.onScroll();
    });
  }

  /** The range of rows that should be in the DOM now. */
  wanted() {
    const offset = -this.tbody.getBoundingClientRect().top;
    const first = Math.floor(Math.max(0, offset) / this.rowPx);
    const visible = Math.ceil(window.innerHeight / this.rowPx);
    return [Math.max(0, first - OVERSCAN), Math.min(this.count, first + visible + OVERSCAN)];
  }

  /** Show `count` rows, rendering the window again (after new data, a sort, a selection). */
  render(count) {
    this.count = count;
    this.update(true);
  }

  update(force = false) {
    const [start, end] = this.wanted();
    if (!force && start === this.start && end === this.end) return;
    const table = this.tbody.closest('table');
    const hadFocus = table && table.contains(document.activeElement) &&
      !document.activeElement.closest('thead');
    this.start = start;
    this.end = end;
    const rows = [];
    for (let i = start; i < end; i++) rows.push(this.renderRow(i));
    this.top.firstChild.style.height = `${start * this.rowPx}px`;
    this.bottom.firstChild.style.height = `${(this.count - end) * this.rowPx}px`;
    this.top.hidden = start === 0;
    this.bottom.hidden = end === this.count;
    this.tbody.replaceChildren(this.top, ...rows, this.bottom);
    if (!this.measured && rows.length) {
      this.measured = true;
      const px = rows[0].getBoundingClientRect().height;
      if (px > 0 && Math.abs(px - this.rowPx) > 0.5) {
        this.rowPx = px;
        this.update(true);
        return;
      }
    }
    if (hadFocus) { // the focused row, if it is still rendered; else the grid keeps the keys
      (this.rowAt(this.focused()) || table).focus({preventScroll: true});
    }
  }

  rowAt(index) {
    return this.tbody.querySelector(`tr[data-index="${index}"]`);
  }

  /** Scroll just enough for row `index` to be on screen, render it, and return its <tr>. */
  reveal(index) {
    const rowTop = this.tbody.getBoundingClientRect().top + window.scrollY + index * this.rowPx;
    const margin = this.rowPx;
    if (rowTop - margin < window.scrollY) {
      window.scrollTo({top: rowTop - margin});
    } else if (rowTop + this.rowPx + margin > window.scrollY + window.innerHeight) {
      window.scrollTo({top: rowTop + this.rowPx + margin - window.innerHeight});
    }
    this.update();
    return this.rowAt(index);
  }
}
