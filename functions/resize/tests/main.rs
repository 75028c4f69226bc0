//! The resize function through its public entry points: behaviour on generated images
//! (`resize`) and output quality against full-decode references (`quality`).

mod colour;
mod quality;
mod resize;
