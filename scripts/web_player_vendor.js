// The one entry point of the web player's vendored bundle (scripts/build_web_player.sh bundles it with
// esbuild into text4d/export/web/vendor/spark-three.js): three.js, its OrbitControls and Spark, exposed
// as the global `T4DVendor` by a classic script, because a page opened from file:// may not load module
// scripts (Chromium refuses module fetches from the null origin) but does run classic ones.
export * as THREE from 'three';
export { OrbitControls } from 'three/addons/controls/OrbitControls.js';
export { SparkRenderer, SplatMesh } from '@sparkjsdev/spark';
