// The grid view's tiles, windowed like the list's rows (row_window.js): tiles sit in lines of as
// many as fit the width, every line has one height (measured from a rendered one), and only the
// lines near the screen are in the DOM, between two spacers standing for the rest. So a folder
// of 10,000 photos is a few dozen tiles, and only their thumbnails are asked for.

import {h} from './dom.js';

const DEFAULT_LINE_PX = 196;
const TILE_MIN_PX = 150; // the narrowest a tile gets (see .tiles in app.css)
const OVERSCAN = 3; // lines rendered beyond each edge of the screen

export class TileWindow {
  /**
   * `renderTile(index)` builds tile `index` (an element with role gridcell and data-index);
   * `focused()` is the index of the tile that holds the keyboard focus.
   */
  constructor(container, {renderTile, focused}) {
    this.container = container;
    this.renderTile = renderTile;
    this.focused = focused;
    this.active = false;
    this.count = 0;
    this.start = this.end = 0;
    this.cols = 1;
    this.linePx = DEFAULT_LINE_PX;
    this.measured = false;
    this.top = h('div', {class: 'spacer', 'aria-hidden': 'true'});
    this.bottom = h('div', {class: 'spacer', 'aria-hidden': 'true'});
    this.pending = false;
    const later = () => {
      if (this.pending || !this.active) return;
      this.pending = true;
      requestAnimationFrame(() => {
        this.pending = false;
        this.update();
      });
    };
    window.addEventListener('scroll', later, {passive: true});
    window.addEventListener('resize', () => {
      this.measured = false;
      later();
    });
  }

  /** How many tiles fit on a line now (at least one). */
  columns() {
    const gap = 12; // the grid's gap, in px
    const width = this.container.clientWidth;
    return Math.max(1, Math.floor((width + gap) / (TILE_MIN_PX + gap)));
  }

  wanted() {
    const lines = Math.ceil(this.count / this.cols);
    const offset = -this.container.getBoundingClientRect().top;
    const first = Math.floor(Math.max(0, offset) / this.linePx);
    const visible = Math.ceil(window.innerHeight / this.linePx);
    return [Math.max(0, first - OVERSCAN), Math.min(lines, first + visible + OVERSCAN)];
  }

  /** Show `count` tiles, rendering the window again. */
  render(count) {
    this.count = count;
    this.update(true);
  }

  update(force = false) {
    if (!this.active) return;
    const cols = this.columns();
    if (cols !== this.cols) {
      this.cols = cols;
      force = true;
    }
    this.container.style.setProperty('--tile-columns', String(cols));
    const [start, end] = this.wanted();
    if (!force && start === this.start && end === this.end) return;
    const hadFocus = this.container.contains(document.activeElement);
    this.start = start;
    this.end = end;
    const lines = [];
    for (let line = start; line < end; line++) {
      const tiles = [];
      for (let i = line * cols; i < Math.min(this.count, (line + 1) * cols); i++) {
        tiles.push(this.renderTile(i));
      }
      lines.push(h('div', {role: 'row', class: 'tile-line'}, tiles));
    }
    const total = Math.ceil(this.count / cols);
    this.top.style.height = `${start * this.linePx}px`;
    this.bottom.style.height = `${(total - end) * this.linePx}px`;
    this.top.hidden = start === 0;
    this.bottom.hidden = end === total;
    this.container.replaceChildren(this.top, ...lines, this.bottom);
    if (!this.measured && lines.length) {
      this.measured = true;
      const px = lines[0].getBoundingClientRect().height;
      if (px > 0 && Math.abs(px - this.linePx) > 0.5) {
        this.linePx = px;
        this.update(true);
        return;
      }
    }
    if (hadFocus) (this.rowAt(this.focused()) || this.container).focus({preventScroll: true});
  }

  rowAt(index) {
    return this.container.querySelector(`[data-index="${index}"]`);
  }

  /** Scroll just enough for tile `index` to be on screen, render it, and return it. */
  reveal(index) {
    const line = Math.floor(index / this.cols);
    const lineTop = this.container.getBoundingClientRect().top + window.scrollY +
      line * this.linePx;
    if (lineTop < window.scrollY) {
      window.scrollTo({top: lineTop});
    } else if (lineTop + this.linePx > window.scrollY + window.innerHeight) {
      window.scrollTo({top: lineTop + this.linePx - window.innerHeight});
    }
    this.update();
    return this.rowAt(index);
  }
}
