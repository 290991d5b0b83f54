/* The report page's gallery and image viewer. It reads window.REPORT_DATA (report_files/data.js)
   and, for the image on view, report_files/layers/N.js, which calls REPORT_LAYERS with the
   image's layers as PNG data URLs. Plain JavaScript, no framework, no network: the page opens
   from file://, where script tags load but fetching a file or reading its pixels does not. */
(function () {
  'use strict';

  var data = window.REPORT_DATA;
  var PAGE_SIZE = 240;          // cards per gallery page; thumbnails load as they scroll in
  var CACHE_SIZE = 24;          // decoded images' layers kept for going back and forth
  var UNLABELLED = 255;         // a layer's value for ignored pixels (pictures.py)
  var MISSED = [255, 0, 64];    // an enabled class's pixel predicted as another class
  var FALSE_ALARM = [255, 176, 0];  // an enabled class predicted where the truth is another
  var IGNORED = [255, 255, 255];
  var LAYER_LABELS = {none: 'image', truth: 'ground truth', pred: 'prediction',
                      errors: 'errors', uncertainty: 'uncertainty'};
  var LEGENDS = {
    none: 'The image alone.',
    truth: 'The ground truth in the class colours (white: ignored pixels).',
    pred: 'The prediction in the class colours.',
    errors: 'Red: a pixel of a ticked class predicted as another class. Amber: a ticked class ' +
            'predicted where the truth is another class.',
    uncertainty: 'Predictive entropy: clear where the model is sure, bright where it is not.'
  };

  var state = {order: [], page: 0, current: -1, layer: 'none', opacity: 0.6, zoom: false,
               enabled: [], ignored: true, palette: null};
  var cache = new Map();
  var pending = new Map();

  function $(id) { return document.getElementById(id); }

  function el(tag, props, children) {
    var node = document.createElement(tag);
    Object.keys(props || {}).forEach(function (key) {
      if (key === 'text') { node.textContent = props[key]; }
      else if (key === 'dataset') { Object.assign(node.dataset, props[key]); }
      else if (key in node) { node[key] = props[key]; }
      else { node.setAttribute(key, props[key]); }
    });
    (children || []).forEach(function (child) { node.appendChild(child); });
    return node;
  }

  function swatch(color) {
    return el('span', {className: 'swatch',
                       style: 'background: rgb(' + color.join(', ') + ')'});
  }

  function format(value) {
    if (value === null || value === undefined) { return '-'; }
    return Number.isInteger(value) ? value.toLocaleString('en') : value.toFixed(4);
  }

  // ------------------------------------------------------------- measures, sorting, filtering

  function measure(spec) {
    var parts = spec.split(':');
    var list = parts[0] === 'v' ? data.measures : data.class_measures;
    var found = list.filter(function (m) { return m.key === parts[1]; })[0];
    return {kind: parts[0], key: parts[1], cls: parts.length > 2 ? Number(parts[2]) : null,
            label: found.label, better: found.better};
  }

  function valueOf(row, m) {
    var value = m.kind === 'v' ? row.values[m.key] : row.classes[m.key][m.cls];
    return value === undefined ? null : value;
  }

  function describe(m) {
    return m.kind === 'v' ? m.label : m.label + ' of ' + data.classes[m.cls].name;
  }

  function sortSpec() { return measure($('sort-by').value); }

  function filterSpec() {
    var cls = $('filter-class').value;
    if (cls === '') { return null; }
    var threshold = parseFloat($('filter-value').value);
    if (isNaN(threshold)) { return null; }
    return {m: measure('c:' + $('filter-measure').value + ':' + cls),
            below: $('filter-op').value === 'below', threshold: threshold};
  }

  function kept(row, filter) {
    if (!filter) { return true; }
    var value = valueOf(row, filter.m);
    if (value === null) { return false; }  // the class is not in this image: nothing to show
    return filter.below ? value < filter.threshold : value > filter.threshold;
  }

  function computeOrder() {
    var m = sortSpec();
    var ascending = (m.better === 'high') === ($('sort-order').value === 'worst');
    var filter = filterSpec();
    var rows = [];
    data.images.forEach(function (row, index) {
      if (kept(row, filter)) { rows.push({index: index, value: valueOf(row, m)}); }
    });
    rows.sort(function (a, b) {
      if (a.value === null || b.value === null) {
        return (a.value === null) - (b.value === null) || a.index - b.index;
      }
      return (ascending ? a.value - b.value : b.value - a.value) || a.index - b.index;
    });
    state.order = rows.map(function (r) { return r.index; });
  }

  // ------------------------------------------------------------- the gallery

  function shortName(name) {  // predict's names are paths: the card shows the file's name
    return name.split(/[\\/]/).pop();
  }

  function card(position) {
    var row = data.images[state.order[position]];
    var m = sortSpec();
    var first = data.measures[0];
    var lines = [el('span', {text: describe(m) + ' ' + format(valueOf(row, m))})];
    if (m.kind !== 'v' || m.key !== first.key) {
      lines.push(el('span', {text: first.label + ' ' + format(row.values[first.key])}));
    }
    var thumb = el('img', {src: row.thumb, alt: row.name, loading: 'lazy'});
    return el('li', {dataset: {name: row.name}}, [
      el('a', {href: '#image=' + encodeURIComponent(row.name), title: row.name}, [
        el('div', {className: 'thumb'}, [thumb]),
        el('span', {className: 'name'}, [el('span', {className: 'rank',
                                                     text: '#' + (position + 1)}),
                                          document.createTextNode(shortName(row.name))]),
        el('span', {className: 'value'}, lines.slice(0, 1)),
        el('span', {className: 'value'}, lines.slice(1))])]);
  }

  function pager(where) {
    var pages = Math.ceil(state.order.length / PAGE_SIZE);
    var box = $(where);
    box.textContent = '';
    if (pages <= 1) { return; }
    var select = el('select', {'aria-label': 'page'});
    for (var page = 0; page < pages; page++) {
      select.appendChild(el('option', {value: page, text: 'page ' + (page + 1) + ' of ' + pages,
                                       selected: page === state.page}));
    }
    select.addEventListener('change', function () { showPage(Number(select.value)); });
    var prev = el('button', {text: '\u2190 previous', disabled: state.page === 0});
    var next = el('button', {text: 'next \u2192', disabled: state.page >= pages - 1});
    prev.addEventListener('click', function () { showPage(state.page - 1); });
    next.addEventListener('click', function () { showPage(state.page + 1); });
    [prev, select, next].forEach(function (node) { box.appendChild(node); });
  }

  function renderGallery() {
    var grid = $('grid');
    var start = state.page * PAGE_SIZE;
    var end = Math.min(start + PAGE_SIZE, state.order.length);
    var fragment = document.createDocumentFragment();
    for (var position = start; position < end; position++) {
      fragment.appendChild(card(position));
    }
    grid.textContent = '';
    grid.appendChild(fragment);
    var total = data.images.length;
    $('count').textContent = (state.order.length ? (start + 1) + '-' + end : '0') + ' of ' +
      state.order.length.toLocaleString('en') + ' images' +
      (state.order.length < total ? ' (filtered from ' + total.toLocaleString('en') + ')' : '');
    pager('pager-top');
    pager('pager-bottom');
  }

  function showPage(page) {
    state.page = Math.max(0, Math.min(page, Math.ceil(state.order.length / PAGE_SIZE) - 1));
    renderGallery();
    $('gallery').scrollIntoView();
  }

  function reorder() {
    computeOrder();
    state.page = 0;
    renderGallery();
  }

  function option(value, text) { return el('option', {value: value, text: text}); }

  function buildControls() {
    var sortBy = $('sort-by');
    data.measures.forEach(function (m) { sortBy.appendChild(option('v:' + m.key, m.label)); });
    data.class_measures.forEach(function (m) {
      var group = el('optgroup', {label: m.label + ' of a class'});
      data.classes.forEach(function (c, index) {
        group.appendChild(option('c:' + m.key + ':' + index, m.label + ' of ' + c.name));
      });
      sortBy.appendChild(group);
    });
    sortBy.value = data.sort.key;
    $('sort-order').value = data.sort.order;
    var filterClass = $('filter-class');
    filterClass.appendChild(option('', 'any class (no filter)'));
    data.classes.forEach(function (c, index) { filterClass.appendChild(option(index, c.name)); });
    data.class_measures.forEach(function (m) {
      $('filter-measure').appendChild(option(m.key, m.label));
    });
    ['sort-by', 'sort-order', 'filter-class', 'filter-measure', 'filter-op', 'filter-value']
      .forEach(function (id) { $(id).addEventListener('change', reorder); });
    $('filter-value').addEventListener('input', reorder);
    $('controls').hidden = false;
  }

  // ------------------------------------------------------------- layers: loading and painting

  function decodeGrey(url) {
    return new Promise(function (resolve, reject) {
      var image = new Image();
      image.onload = function () {
        var canvas = el('canvas', {width: image.naturalWidth, height: image.naturalHeight});
        var context = canvas.getContext('2d', {willReadFrequently: true});
        context.drawImage(image, 0, 0);
        var rgba = context.getImageData(0, 0, canvas.width, canvas.height).data;
        var values = new Uint8Array(canvas.width * canvas.height);
        for (var i = 0; i < values.length; i++) { values[i] = rgba[i * 4]; }
        resolve({width: canvas.width, height: canvas.height, values: values});
      };
      image.onerror = function () { reject(new Error('a layer image could not be decoded')); };
      image.src = url;
    });
  }

  window.REPORT_LAYERS = function (number, urls) {
    var names = Object.keys(urls);
    Promise.all(names.map(function (name) { return decodeGrey(urls[name]); }))
      .then(function (decoded) {
        var layers = {};
        names.forEach(function (name, i) { layers[name] = decoded[i]; });
        cache.set(number, layers);
        while (cache.size > CACHE_SIZE) { cache.delete(cache.keys().next().value); }
        (pending.get(number) || []).forEach(function (done) { done.resolve(layers); });
        pending.delete(number);
      })
      .catch(function (error) {
        (pending.get(number) || []).forEach(function (done) { done.reject(error); });
        pending.delete(number);
      });
  };

  function loadLayers(row) {
    if (cache.has(row.number)) { return Promise.resolve(cache.get(row.number)); }
    return new Promise(function (resolve, reject) {
      var waiting = pending.get(row.number);
      if (waiting) { waiting.push({resolve: resolve, reject: reject}); return; }
      pending.set(row.number, [{resolve: resolve, reject: reject}]);
      var script = el('script', {src: row.layers});
      script.onerror = function () {
        (pending.get(row.number) || []).forEach(function (done) {
          done.reject(new Error(row.layers + ' is missing'));
        });
        pending.delete(row.number);
      };
      script.onload = function () { script.remove(); };
      document.body.appendChild(script);
    });
  }

  function buildPalette() {
    var palette = new Uint8Array(256 * 3);
    data.classes.forEach(function (c, index) { palette.set(c.color, index * 3); });
    palette.set(IGNORED, UNLABELLED * 3);
    state.palette = palette;
    state.enabled = data.classes.map(function () { return true; });
  }

  function heat(value) {  // black-red-yellow-white ramp of an uncertainty 0..255
    var t = value / 255;
    return [Math.min(255, Math.round(t * 3 * 255)),
            Math.max(0, Math.min(255, Math.round((t * 3 - 1) * 255))),
            Math.max(0, Math.min(255, Math.round((t * 3 - 2) * 255)))];
  }

  function paintLabels(pixels, values, alpha, isTruth) {
    var palette = state.palette;
    for (var i = 0; i < values.length; i++) {
      var v = values[i];
      var on = v === UNLABELLED ? (isTruth && state.ignored) : state.enabled[v];
      if (!on) { continue; }
      pixels[i * 4] = palette[v * 3];
      pixels[i * 4 + 1] = palette[v * 3 + 1];
      pixels[i * 4 + 2] = palette[v * 3 + 2];
      pixels[i * 4 + 3] = alpha;
    }
  }

  function paintErrors(pixels, truth, pred, alpha) {
    for (var i = 0; i < truth.length; i++) {
      var t = truth[i], p = pred[i];
      if (t === UNLABELLED || t === p) { continue; }
      var color = state.enabled[t] ? MISSED : (state.enabled[p] ? FALSE_ALARM : null);
      if (!color) { continue; }
      pixels[i * 4] = color[0];
      pixels[i * 4 + 1] = color[1];
      pixels[i * 4 + 2] = color[2];
      pixels[i * 4 + 3] = alpha;
    }
  }

  function paintUncertainty(pixels, values, opacity) {
    for (var i = 0; i < values.length; i++) {
      var color = heat(values[i]);
      pixels[i * 4] = color[0];
      pixels[i * 4 + 1] = color[1];
      pixels[i * 4 + 2] = color[2];
      pixels[i * 4 + 3] = Math.round(opacity * values[i]);
    }
  }

  function paint() {
    var row = data.images[state.order[state.current]];
    var layers = row && cache.get(row.number);
    if (!layers) { return; }
    var canvas = $('layer');
    var base = layers.pred;
    canvas.width = base.width;
    canvas.height = base.height;
    var context = canvas.getContext('2d');
    var image = context.createImageData(base.width, base.height);
    var alpha = Math.round(state.opacity * 255);
    if (state.layer === 'truth' || state.layer === 'pred') {
      paintLabels(image.data, layers[state.layer].values, alpha, state.layer === 'truth');
    } else if (state.layer === 'errors') {
      paintErrors(image.data, layers.truth.values, layers.pred.values, alpha);
    } else if (state.layer === 'uncertainty') {
      paintUncertainty(image.data, layers.uncertainty.values, state.opacity);
    }
    context.putImageData(image, 0, 0);
    $('stage').dataset.drawn = state.layer + ':' + row.number;
  }

  // ------------------------------------------------------------- the viewer

  function buildLayerButtons() {
    var box = $('layers');
    $('keys').textContent = '\u2190 \u2192 move \u00b7 0-' + data.layers.length +
      ' layers \u00b7 z zoom \u00b7 Esc close';
    ['none'].concat(data.layers).forEach(function (name, key) {
      var input = el('input', {type: 'radio', name: 'layer', value: name,
                               checked: name === state.layer});
      input.addEventListener('change', function () { setLayer(name); });
      box.appendChild(el('label', {title: 'key ' + key}, [
        input, document.createTextNode(' ' + LAYER_LABELS[name])]));
    });
  }

  function setLayer(name) {
    state.layer = name;
    Array.prototype.forEach.call(document.querySelectorAll('input[name=layer]'), function (input) {
      input.checked = input.value === name;
    });
    $('legend').textContent = LEGENDS[name];
    paint();
  }

  function toggle(label, color, checked, onChange) {
    var input = el('input', {type: 'checkbox', checked: checked});
    input.addEventListener('change', function () { onChange(input.checked); paint(); });
    return el('label', {}, [input, document.createTextNode(' '), swatch(color),
                            document.createTextNode(label)]);
  }

  function buildToggles() {
    var box = $('toggles');
    var all = el('button', {text: 'all'});
    var none = el('button', {text: 'none'});
    box.appendChild(el('div', {className: 'all'}, [document.createTextNode('classes '), all,
                                                     document.createTextNode(' '), none]));
    var boxes = data.classes.map(function (c, index) {
      var label = toggle(c.name, c.color, true, function (on) { state.enabled[index] = on; });
      label.dataset.cls = index;
      box.appendChild(label);
      return label.querySelector('input');
    });
    function setAll(on) {
      boxes.forEach(function (input, index) { input.checked = on; state.enabled[index] = on; });
      paint();
    }
    all.addEventListener('click', function () { setAll(true); });
    none.addEventListener('click', function () { setAll(false); });
    if (data.layers.indexOf('truth') >= 0) {
      box.appendChild(toggle('ignored (ground truth)', IGNORED, true,
                             function (on) { state.ignored = on; }));
    }
  }

  function scoresTable(row) {
    var table = $('image-scores');
    table.textContent = '';
    data.measures.forEach(function (m) {
      table.appendChild(el('tr', {}, [el('th', {text: m.short}),
                                      el('td', {className: 'num',
                                                text: format(row.values[m.key])})]));
    });
    var head = el('tr', {}, [el('th', {text: 'class'})].concat(data.class_measures.map(
      function (m) { return el('th', {className: 'num', text: m.short, title: m.label}); })));
    table.appendChild(head);
    data.classes.forEach(function (c, index) {
      table.appendChild(el('tr', {}, [el('td', {}, [swatch(c.color),
                                                    document.createTextNode(c.name)])]
        .concat(data.class_measures.map(function (m) {
          return el('td', {className: 'num', text: format(row.classes[m.key][index])});
        }))));
    });
  }

  function open(position) {
    state.current = position;
    var row = data.images[state.order[position]];
    $('viewer').hidden = false;
    $('picture').src = row.image;
    $('picture').alt = row.name;
    $('viewer-name').textContent = row.name;
    $('position').textContent = (position + 1) + ' / ' + state.order.length;
    $('prev').disabled = position === 0;
    $('next').disabled = position >= state.order.length - 1;
    scoresTable(row);
    var context = $('layer').getContext('2d');
    context.clearRect(0, 0, $('layer').width, $('layer').height);
    delete $('stage').dataset.drawn;
    loadLayers(row).then(function () {
      if (state.current === position) { paint(); }
    }, function (error) { $('legend').textContent = error.message; });
    var next = data.images[state.order[position + 1]];
    if (next) { loadLayers(next).catch(function () { return null; }); }  // ahead of the key
  }

  function move(step) {
    var position = state.current + step;
    if (position < 0 || position >= state.order.length) { return; }
    location.replace('#image=' + encodeURIComponent(data.images[state.order[position]].name));
  }

  function close() {
    var position = state.current;
    $('viewer').hidden = true;
    state.current = -1;
    if (position >= 0 && Math.floor(position / PAGE_SIZE) !== state.page) {
      state.page = Math.floor(position / PAGE_SIZE);
      renderGallery();
    }
    if (location.hash.indexOf('#image=') === 0) { location.replace('#gallery'); }
    var cards = $('grid').children;
    var item = cards[position - state.page * PAGE_SIZE];
    if (item) {
      item.scrollIntoView({block: 'center'});
      item.querySelector('a').focus();
    }
  }

  function layout() {  // fit the picture to the frame; zoomed: twice that, at least 1:1
    var picture = $('picture');
    var frame = $('frame');
    if (!picture.naturalWidth) { return; }
    var fit = Math.min((frame.clientWidth - 16) / picture.naturalWidth,
                       (frame.clientHeight - 16) / picture.naturalHeight);
    var scale = state.zoom ? Math.max(1, 2 * fit) : fit;
    picture.style.width = Math.round(picture.naturalWidth * scale) + 'px';
    picture.style.height = Math.round(picture.naturalHeight * scale) + 'px';
    picture.classList.toggle('pixelated', scale >= 2);
  }

  function setZoom(on) {
    state.zoom = on;
    $('frame').classList.toggle('zoomed', on);
    $('zoom').classList.toggle('on', on);
    layout();
  }

  function route() {
    if (location.hash.indexOf('#image=') !== 0) {
      if (!$('viewer').hidden) { close(); }
      return;
    }
    var name = decodeURIComponent(location.hash.slice('#image='.length));
    var index = data.images.findIndex(function (row) { return row.name === name; });
    if (index < 0) { return; }
    var position = state.order.indexOf(index);
    if (position < 0) {  // filtered out: show it among all images
      $('filter-class').value = '';
      computeOrder();
      renderGallery();
      position = state.order.indexOf(index);
    }
    open(position);
  }

  function onKey(event) {
    if ($('viewer').hidden || event.altKey || event.ctrlKey || event.metaKey) { return; }
    var tag = event.target.tagName;
    if ((tag === 'SELECT' || tag === 'TEXTAREA') ||
        (tag === 'INPUT' && event.target.type !== 'radio' && event.target.type !== 'checkbox' &&
         event.target.type !== 'range')) { return; }
    var names = ['none'].concat(data.layers);
    if (event.key === 'ArrowLeft') { move(-1); }
    else if (event.key === 'ArrowRight') { move(1); }
    else if (event.key === 'Escape') { close(); }
    else if (event.key === 'z') { setZoom(!state.zoom); }
    else if (/^[0-9]$/.test(event.key) && Number(event.key) < names.length) {
      setLayer(names[Number(event.key)]);
    } else { return; }
    event.preventDefault();
  }

  function bindViewer() {
    $('prev').addEventListener('click', function () { move(-1); });
    $('next').addEventListener('click', function () { move(1); });
    $('close').addEventListener('click', close);
    $('zoom').addEventListener('click', function () { setZoom(!state.zoom); });
    $('opacity').addEventListener('input', function () {
      state.opacity = Number($('opacity').value) / 100;
      paint();
    });
    document.addEventListener('keydown', onKey);
    $('picture').addEventListener('load', layout);
    window.addEventListener('resize', layout);
    window.addEventListener('hashchange', route);
  }

  function init() {
    if (!data) { return; }  // the page's note (#needs) says what is missing
    $('needs').hidden = true;
    buildPalette();
    buildControls();
    state.layer = data.layers.indexOf('errors') >= 0 ? 'errors' : 'pred';
    buildLayerButtons();
    buildToggles();
    setLayer(state.layer);
    bindViewer();
    computeOrder();
    renderGallery();
    route();
    document.body.dataset.ready = Math.round(performance.now());  // ms from navigation
  }

  init();
}());
