// text4d's 4D Gaussian player: every frame of the clip as a Spark SplatMesh, one visible at a time.
//
// A classic script (not a module) so that the page works when opened from disk: see
// text4d/export/web/__init__.py. The manifest in index.html lists the frame scripts; each one calls
// text4dFrame(index, base64) with that frame's file bytes. Time is the clip's normalised time t in
// [0, 1] (frame k of n sits at t = k / (n - 1)), as everywhere in text4d; playback runs at the
// manifest's fps, and window.text4dPlayer is the page's small API (used by text4d's browser tests).
(function () {
  'use strict';

  const { THREE, OrbitControls, SparkRenderer, SplatMesh } = window.T4DVendor;
  const manifest = JSON.parse(document.getElementById('t4d-manifest').textContent);
  const n = manifest.frames.length;
  const ui = {
    view: document.getElementById('view'),
    status: document.getElementById('status'),
    play: document.getElementById('play'),
    time: document.getElementById('time'),
    loop: document.getElementById('loop'),
    label: document.getElementById('label'),
  };
  const player = {
    ready: false, error: null, frames: n, frame: 0, playing: false, renders: 0, loadSeconds: 0,
    setTime(t) { showFrame(Math.round(Math.min(Math.max(t, 0), 1) * (n - 1))); clock = player.frame; },
    play() { if (!player.ready) return; if (!ui.loop.checked && player.frame === n - 1) clock = 0; player.playing = true; syncUi(); },
    pause() { player.playing = false; syncUi(); },
  };
  window.text4dPlayer = player;

  // Frame scripts deliver bytes through this global; each load waits for its own frame.
  const arrived = new Array(n);
  const waiting = new Array(n);
  window.text4dFrame = function (index, base64) {
    const text = atob(base64);
    const bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i += 1) bytes[i] = text.charCodeAt(i);
    arrived[index] = bytes;
    if (waiting[index]) waiting[index]();
  };
  function loadFrameBytes(index) {
    return new Promise((resolve, reject) => {
      waiting[index] = () => resolve(arrived[index]);
      const script = document.createElement('script');
      script.src = manifest.frames[index];
      script.onerror = () => reject(new Error(`cannot load ${manifest.frames[index]}`));
      document.head.appendChild(script);
    });
  }

  const renderer = new THREE.WebGLRenderer({ antialias: false });
  renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
  ui.view.appendChild(renderer.domElement);
  const scene = new THREE.Scene();
  scene.background = new THREE.Color(0x1b1c1f);
  scene.add(new SparkRenderer({ renderer }));
  const cam = manifest.camera;
  const camera = new THREE.PerspectiveCamera(cam.fovy, 1, 0.01, 1000);
  camera.position.fromArray(cam.position);
  const controls = new OrbitControls(camera, renderer.domElement);
  controls.target.fromArray(cam.target);
  controls.enableDamping = false;
  controls.update();

  function resize() {
    const w = ui.view.clientWidth || window.innerWidth;
    const h = ui.view.clientHeight || window.innerHeight;
    renderer.setSize(w, h, false);
    camera.aspect = w / h;
    camera.updateProjectionMatrix();
  }
  window.addEventListener('resize', resize);
  resize();

  const meshes = [];
  let clock = 0; // playback position in frames, [0, n)

  function showFrame(index) {
    if (meshes[player.frame]) meshes[player.frame].visible = false;
    player.frame = index;
    if (meshes[index]) meshes[index].visible = true;
    syncUi();
  }
  function syncUi() {
    const t = n > 1 ? player.frame / (n - 1) : 0;
    ui.time.value = String(Math.round(t * 1000));
    ui.label.textContent = `frame ${player.frame + 1}/${n}  t=${t.toFixed(2)}`;
    ui.play.textContent = player.playing ? 'Pause' : 'Play';
  }

  ui.play.addEventListener('click', () => (player.playing ? player.pause() : player.play()));
  ui.time.addEventListener('input', () => {
    const t = Number(ui.time.value) / 1000; // read before pause() redraws the controls
    player.pause();
    player.setTime(t);
  });
  window.addEventListener('keydown', (e) => {
    if (!player.ready || e.target === ui.time) return;
    if (e.code === 'Space') { e.preventDefault(); ui.play.click(); }
    if (e.code === 'ArrowRight' || e.code === 'ArrowLeft') {
      player.pause();
      showFrame((player.frame + (e.code === 'ArrowRight' ? 1 : n - 1)) % n);
      clock = player.frame;
    }
  });

  let last = performance.now();
  renderer.setAnimationLoop((now) => {
    const dt = Math.min((now - last) / 1000, 0.25);
    last = now;
    if (player.playing && n > 1) {
      clock += dt * manifest.fps;
      if (clock >= n) {
        if (ui.loop.checked) clock %= n;
        else { clock = n - 1; player.playing = false; }
      }
      if (Math.floor(clock) !== player.frame) showFrame(Math.floor(clock));
      else syncUi();
    }
    controls.update();
    renderer.render(scene, camera);
    player.renders += 1;
  });

  async function load() {
    const start = performance.now();
    for (let i = 0; i < n; i += 1) {
      ui.status.textContent = `loading frame ${i + 1}/${n}…`;
      const mesh = new SplatMesh({ fileBytes: await loadFrameBytes(i), fileType: manifest.fileType });
      await mesh.initialized;
      arrived[i] = null;
      mesh.visible = i === player.frame;
      scene.add(mesh);
      meshes.push(mesh);
    }
    player.loadSeconds = (performance.now() - start) / 1000;
    ui.status.textContent = '';
    ui.play.disabled = false;
    ui.time.disabled = false;
    player.ready = true;
    syncUi();
  }
  load().catch((err) => {
    player.error = String(err);
    ui.status.textContent = `cannot play: ${err}`;
  });
})();
