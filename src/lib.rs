pub mod imaging;
