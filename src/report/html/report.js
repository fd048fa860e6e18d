// Draws the step graph, the timeline and the step table of report.html from the run's data (the
// JSON element above). Rows are drawn only while in view, so a run of 10,000 steps costs what a
// screenful does.
(function () {
  'use strict';
  var data = JSON.parse(document.getElementById('run-data').textContent);
  var steps = data.steps;
  var ROW = 24;
  var MAX_H = 480;
  var selected = -1;
  var lists = [];

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function fmtMs(ms) {
    if (ms === undefined || ms === null) return '';
    if (ms < 1000) return Math.round(ms) + ' ms';
    var s = ms / 1000;
    if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + ' s';
    var m = Math.floor(s / 60);
    return m + 'm ' + String(Math.round(s - m * 60)).padStart(2, '0') + 's';
  }

  function pct(ms) {
    return Math.max(0, Math.min(100, (ms / data.span) * 100));
  }

  // A list that draws only the rows in view (plus a margin), each ROW pixels high.
  function VirtualList(host, drawRow) {
    this.host = host;
    this.drawRow = drawRow;
    this.items = [];
    this.window = null;
    this.inner = el('div', 'vinner');
    host.appendChild(this.inner);
    var self = this;
    host.addEventListener('scroll', function () { self.draw(false); });
    lists.push(this);
  }
  VirtualList.prototype.setItems = function (items) {
    this.items = items;
    this.inner.style.height = items.length * ROW + 'px';
    this.host.style.height = Math.min(Math.max(items.length, 1) * ROW + 2, MAX_H) + 'px';
    this.draw(true);
  };
  VirtualList.prototype.draw = function (force) {
    var h = this.host.clientHeight || MAX_H;
    var top = this.host.scrollTop;
    var first = Math.max(0, Math.floor(top / ROW) - 8);
    var last = Math.min(this.items.length, Math.ceil((top + h) / ROW) + 8);
    var key = first + ':' + last;
    if (!force && key === this.window) return;
    this.window = key;
    var frag = document.createDocumentFragment();
    for (var k = first; k < last; k++) {
      var row = this.drawRow(this.items[k]);
      row.style.top = k * ROW + 'px';
      frag.appendChild(row);
    }
    this.inner.textContent = '';
    this.inner.appendChild(frag);
  };
  VirtualList.prototype.reveal = function (i) {
    var pos = this.items.indexOf(i);
    if (pos < 0) return;
    var top = pos * ROW;
    if (top < this.host.scrollTop || top + ROW > this.host.scrollTop + this.host.clientHeight) {
      this.host.scrollTop = Math.max(0, top - ROW * 3);
    }
    this.draw(true);
  };

  function stepTitle(s) {
    var parts = [s.id, s.state];
    if (s.t0 !== undefined && s.t1 !== undefined) parts.push(fmtMs(s.t1 - s.t0));
    if (s.n_att) parts.push(s.n_att + (s.n_att === 1 ? ' attempt' : ' attempts'));
    return parts.join(' — ');
  }

  // The timeline: one row and one bar per step, its attempts as segments of the bar.
  function timelineRow(i) {
    var s = steps[i];
    var row = el('div', 'vrow tl-row' + (i === selected ? ' selected' : ''));
    row.dataset.step = i;
    var label = el('div', 'tl-label', s.id);
    label.title = s.id;
    var track = el('div', 'tl-track');
    var bar = el('div', 'bar state-' + s.state);
    bar.dataset.state = s.state;
    bar.title = stepTitle(s);
    var t0 = s.t0 !== undefined ? s.t0 : s.t1;
    if (t0 === undefined) {
      bar.classList.add('unstarted');
      bar.style.left = '100%';
      bar.style.width = '0';
    } else {
      var t1 = s.t1 !== undefined ? s.t1 : t0;
      bar.style.left = pct(t0) + '%';
      bar.style.width = Math.max(0, pct(t1) - pct(t0)) + '%';
      if (s.t0 === undefined) bar.classList.add('unstarted');
      var len = Math.max(1, t1 - t0);
      (s.att || []).forEach(function (a) {
        if (!a[2]) return;
        var seg = el('span', 'att att-failed');
        seg.style.left = Math.max(0, Math.min(100, ((a[0] - t0) / len) * 100)) + '%';
        seg.style.width = Math.max(1, Math.min(100, (a[1] / len) * 100)) + '%';
        seg.title = 'attempt failed' + (typeof a[2] === 'string' ? ': ' + a[2] : '');
        bar.appendChild(seg);
      });
    }
    track.appendChild(bar);
    row.appendChild(label);
    row.appendChild(track);
    row.addEventListener('click', function () { select(i); });
    return row;
  }

  function drawAxis() {
    var axis = document.getElementById('axis');
    var span = data.span;
    var nice = [100, 200, 500, 1000, 2000, 5000, 10000, 15000, 30000, 60000, 120000, 300000, 600000, 900000, 1800000, 3600000, 7200000];
    var stepMs = nice[nice.length - 1];
    for (var k = 0; k < nice.length; k++) {
      if (span / nice[k] <= 8) { stepMs = nice[k]; break; }
    }
    for (var t = 0; t <= span; t += stepMs) {
      var tick = el('span', null, fmtMs(t));
      tick.style.left = pct(t) + '%';
      axis.appendChild(tick);
    }
  }

  // The step table.
  function cell(text, cls, title) {
    var c = el('span', cls, text);
    if (title) c.title = title;
    return c;
  }

  function tableRow(i) {
    var s = steps[i];
    var row = el('div', 'vrow row-grid step-row' + (i === selected ? ' selected' : ''));
    row.dataset.step = i;
    row.appendChild(cell(s.id, 'mono', s.id));
    row.appendChild(cell(s.state, 'st state-' + s.state));
    row.appendChild(cell(s.job ? s.job.slice(0, 12) : '', 'mono', s.job));
    row.appendChild(cell(s.wallet || '', null, s.wallet));
    row.appendChild(cell(s.pay || '', 'num'));
    row.appendChild(cell(s.secs ? s.secs.toFixed(2) + ' s' : '', 'num'));
    row.appendChild(cell(s.n_att || '', 'num'));
    row.appendChild(cell(s.receipt === true ? 'verified' : s.receipt === false ? 'NOT verified' : '', s.receipt === false ? 'st state-failed' : null));
    var n = (s.issues ? s.issues.length : 0) + (s.more_issues || 0);
    row.appendChild(cell(n || '', 'num' + (n ? ' st state-failed' : '')));
    row.appendChild(cell(s.preview || '', null, s.preview));
    row.addEventListener('click', function () { select(i); });
    return row;
  }

  function addField(dl, name, value) {
    if (value === undefined || value === null || value === '') return;
    dl.appendChild(el('dt', null, name));
    dl.appendChild(el('dd', null, value));
  }

  function showDetail(i) {
    var s = steps[i];
    var d = document.getElementById('detail');
    d.textContent = '';
    d.hidden = false;
    d.appendChild(el('h3', null, s.id));
    d.appendChild(el('p', null, s.summary));
    var dl = el('dl');
    addField(dl, 'kind', s.kind);
    addField(dl, 'state', s.state);
    addField(dl, 'job', s.job);
    addField(dl, 'job status', s.status);
    addField(dl, 'wallet', s.wallet);
    addField(dl, 'payment', s.pay ? s.pay + ' AITBC' : '');
    addField(dl, 'duration', s.t0 !== undefined && s.t1 !== undefined ? fmtMs(s.t1 - s.t0) : '');
    addField(dl, 'attempts', s.n_att || '');
    addField(dl, 'receipt', s.receipt === true ? 'verified' : s.receipt === false ? 'NOT verified' + (s.receipt_error ? ': ' + s.receipt_error : '') : 'none');
    addField(dl, 'needs', (s.needs || []).map(function (k) { return steps[k].id; }).join(', '));
    addField(dl, 'cached from run', s.cached_from);
    addField(dl, 'when', s.when);
    addField(dl, 'why', s.reason);
    d.appendChild(dl);
    if (s.issues && s.issues.length) {
      d.appendChild(el('h4', null, 'Issues'));
      var ul = el('ul', 'issues');
      s.issues.forEach(function (t) { ul.appendChild(el('li', null, t)); });
      if (s.more_issues) ul.appendChild(el('li', 'muted', 'and ' + s.more_issues + ' more in report.json'));
      d.appendChild(ul);
    }
    if (s.recs && s.recs.length) {
      d.appendChild(el('h4', null, 'Recommendations'));
      var rl = el('ul');
      s.recs.forEach(function (t) { rl.appendChild(el('li', null, t)); });
      d.appendChild(rl);
    }
    var failed = (s.att || []).filter(function (a) { return a[2]; });
    if (failed.length) {
      d.appendChild(el('h4', null, 'Failed attempts'));
      var al = el('ul');
      failed.forEach(function (a) {
        al.appendChild(el('li', null, 'at ' + fmtMs(a[0]) + ' (' + fmtMs(a[1]) + ')' + (typeof a[2] === 'string' ? ': ' + a[2] : '')));
      });
      if (s.n_att > (s.att || []).length) d.appendChild(el('p', 'muted', (s.n_att - s.att.length) + ' attempts in between are in report.json'));
      d.appendChild(al);
    }
    if (s.preview) {
      d.appendChild(el('h4', null, 'Output (preview)'));
      d.appendChild(el('pre', null, s.preview));
    }
  }

  function select(i) {
    selected = i;
    lists.forEach(function (l) { l.reveal(i); });
    var nodes = document.querySelectorAll('.graph .node');
    for (var k = 0; k < nodes.length; k++) {
      nodes[k].classList.toggle('selected', Number(nodes[k].dataset.step) === i);
    }
    showDetail(i);
  }

  // The step graph: levels as columns, one box per step coloured by its state; a summary per level
  // when the run has too many steps to draw.
  var SVG = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs) {
    var e = document.createElementNS(SVG, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }

  function drawGraph() {
    var host = document.getElementById('graph');
    if (!steps.length) { host.appendChild(el('p', 'muted', 'No steps.')); return; }
    if (steps.length > data.graph_nodes) { drawLevels(host); return; }
    var W = 170, H = 26, GX = 56, GY = 10, PAD = 12;
    var columns = [];
    steps.forEach(function (s, i) {
      (columns[s.level] = columns[s.level] || []).push(i);
    });
    var pos = [];
    var rows = 0;
    columns.forEach(function (col, level) {
      (col || []).forEach(function (i, k) {
        pos[i] = { x: PAD + level * (W + GX), y: PAD + k * (H + GY) };
      });
      rows = Math.max(rows, col ? col.length : 0);
    });
    var width = PAD * 2 + columns.length * (W + GX) - GX;
    var height = PAD * 2 + rows * (H + GY) - GY;
    var root = svg('svg', { width: width, height: height, viewBox: '0 0 ' + width + ' ' + height, role: 'img', 'aria-label': 'step graph' });
    var defs = svg('defs', {});
    var marker = svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 6, markerHeight: 6, orient: 'auto-start-reverse' });
    marker.appendChild(svg('path', { d: 'M 0 0 L 10 5 L 0 10 z', fill: '#8c959f' }));
    defs.appendChild(marker);
    root.appendChild(defs);
    steps.forEach(function (s, i) {
      (s.needs || []).forEach(function (d) {
        var a = pos[d], b = pos[i];
        var x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
        root.appendChild(svg('path', { 'class': 'edge', d: 'M' + x1 + ',' + y1 + ' C' + mx + ',' + y1 + ' ' + mx + ',' + y2 + ' ' + x2 + ',' + y2, 'marker-end': 'url(#arrow)' }));
      });
    });
    steps.forEach(function (s, i) {
      var g = svg('g', { 'class': 'node state-' + s.state, transform: 'translate(' + pos[i].x + ',' + pos[i].y + ')' });
      g.dataset.step = i;
      g.dataset.state = s.state;
      var title = svg('title', {});
      title.textContent = stepTitle(s) + ' (' + s.kind + ')';
      g.appendChild(title);
      g.appendChild(svg('rect', { width: W, height: H, rx: 5 }));
      var text = svg('text', { x: 8, y: H / 2 + 4 });
      text.textContent = s.id.length > 22 ? s.id.slice(0, 21) + '…' : s.id;
      g.appendChild(text);
      g.addEventListener('click', function () { select(i); });
      root.appendChild(g);
    });
    host.appendChild(root);
  }

  function drawLevels(host) {
    var levels = 0;
    steps.forEach(function (s) { levels = Math.max(levels, s.level + 1); });
    var per = Math.ceil(levels / 60);
    var groups = [];
    steps.forEach(function (s) {
      var g = Math.floor(s.level / per);
      var c = groups[g] = groups[g] || { n: 0 };
      c.n++;
      c[s.state] = (c[s.state] || 0) + 1;
    });
    host.appendChild(el('p', 'muted', steps.length + ' steps in ' + levels + (levels === 1 ? ' level' : ' levels') + ': too many to draw one by one, so each row is ' + (per === 1 ? 'a level' : per + ' levels') + ', coloured by the states of its steps.'));
    var table = el('table', 'levels');
    var states = ['succeeded', 'failed', 'skipped', 'cancelled', 'pending'];
    groups.forEach(function (c, g) {
      if (!c) return;
      var tr = el('tr', 'level-row');
      var from = g * per, to = Math.min(levels, (g + 1) * per) - 1;
      tr.appendChild(el('td', null, from === to ? 'level ' + from : 'levels ' + from + '–' + to));
      tr.appendChild(el('td', 'num', c.n + ' steps'));
      var td = el('td');
      var stack = el('div', 'stack');
      var title = [];
      states.forEach(function (st) {
        if (!c[st]) return;
        var seg = el('span', 'state-' + st);
        seg.style.width = (c[st] / c.n) * 100 + '%';
        stack.appendChild(seg);
        title.push(c[st] + ' ' + st);
      });
      stack.title = title.join(', ');
      td.appendChild(stack);
      tr.appendChild(td);
      tr.appendChild(el('td', 'muted', title.join(', ')));
      table.appendChild(tr);
    });
    host.appendChild(table);
  }

  // Filters apply to the timeline and the table alike.
  var timeline = new VirtualList(document.getElementById('timeline'), timelineRow);
  var table = new VirtualList(document.getElementById('steps'), tableRow);
  function applyFilter() {
    var text = document.getElementById('filter').value.trim().toLowerCase();
    var state = document.getElementById('state-filter').value;
    var shown = [];
    for (var i = 0; i < steps.length; i++) {
      var s = steps[i];
      if (state && s.state !== state) continue;
      if (text && (s.id + ' ' + (s.job || '') + ' ' + (s.wallet || '')).toLowerCase().indexOf(text) < 0) continue;
      shown.push(i);
    }
    document.getElementById('shown').textContent = shown.length === steps.length ? steps.length + ' steps' : shown.length + ' of ' + steps.length + ' steps';
    timeline.setItems(shown);
    table.setItems(shown);
  }
  document.getElementById('filter').addEventListener('input', applyFilter);
  document.getElementById('state-filter').addEventListener('change', applyFilter);

  drawGraph();
  drawAxis();
  applyFilter();
  var firstFailed = -1;
  for (var k = 0; k < steps.length; k++) { if (steps[k].state === 'failed') { firstFailed = k; break; } }
  if (firstFailed >= 0) select(firstFailed);
  document.documentElement.setAttribute('data-rendered', performance.now().toFixed(1));
})();
